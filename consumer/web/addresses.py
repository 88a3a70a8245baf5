"""An address's page: where its quarantine record lives, asking the owner for it, and what the page shows.

The quarantine stage keys its state by the normal address, in the partition of address.signals the producers'
partitioner gives that key, owned by one member of the `<group>.quarantine` group. The page is made by the
instance the browser asks (its form tokens are this instance's); only the record comes from the owner, through
its JSON API. Addresses are personal data: they travel in POST bodies only, never in a path or a query string
(which proxies and access logs keep), and logs name them by `consumer.quarantine.privacy.address_ref`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from ssl import SSLContext
from typing import Any, Protocol

from consumer.ops.exchange import Request
from consumer.quarantine.commands import command_key
from consumer.quarantine.signals import normal_address
from consumer.web.csrf import FORM, JSON, form_field, media_type
from consumer.web.owners import KeyPartitions, Owners, ask_json

FIELD = "address"
MAX_ADDRESS = 320  # characters: the longest address SMTP allows (64 + 1 + 255)
STATUS_PATH = "/api/addresses/status"
RELEASABLE = ("QUARANTINED", "DENYLISTED")  # what only a manual release ends


class AddressState(Protocol):
    """What the quarantine stage answers for the partitions it owns; safe to call from HTTP threads."""

    def owned_partitions(self) -> set[int]: ...

    def committed_status(self, address: str) -> dict[str, Any] | None:
        """The AddressStatus record (schemas/address_status.avsc) from committed state; None when this instance
        does not own the address or does not know it."""
        ...


@dataclass(frozen=True)
class AddressPlacement:
    """Where addresses live: this instance's quarantine stage (None when it runs none), the owners of the
    `<group>.quarantine` group's partitions, and the partition of an address's key."""

    state: AddressState | None
    owners: Owners | None
    partitions: KeyPartitions

    def partition(self, address: str) -> int:
        """The address's partition of address.signals; LookupError when the topic's partitions are unknown."""
        return self.partitions.of(command_key(address))

    def owned(self) -> set[int]:
        return self.state.owned_partitions() if self.state is not None else set()


class AddressProblem(ValueError):
    """The request names no usable address: answered 400."""


def address_of(request: Request) -> str:
    """The normal address a form (`address=`) or a JSON body (`{"address": ...}`) names."""
    if media_type(request) == JSON:
        try:
            given = json.loads(request.body or b"null")
        except ValueError:
            raise AddressProblem('the body must be JSON: {"address": ...}') from None
        raw = given.get(FIELD) if isinstance(given, dict) else None
    elif media_type(request) == FORM:
        raw = form_field(request, FIELD)
    else:
        raise AddressProblem("send the address as a form or as JSON")
    address = normal_address(raw) if isinstance(raw, str) else ""
    if not address:
        raise AddressProblem("an address is needed")
    if len(address) > MAX_ADDRESS:
        raise AddressProblem(f"an address has at most {MAX_ADDRESS} characters")
    return address


def ask_owner(
    request: Request, owner_url: str, address: str, timeout_s: float, context: SSLContext | None
) -> dict[str, Any] | None:
    """The owner's record of the address (its STATUS_PATH), asked with the user's credentials; None: unknown."""
    asked = replace(
        request,
        method="POST",
        path=STATUS_PATH,
        raw_path=STATUS_PATH,
        query={},
        headers={**request.headers, "content-type": JSON},
        body=json.dumps({FIELD: address}).encode(),
    )
    return ask_json(asked, owner_url, timeout_s, context)


def history_rows(record: Mapping[str, Any], known: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The recipient history as the page lists it, newest first; `linked` when the view knows the delivery."""
    return [{**message, "linked": known(message["delivery_id"])} for message in record["history"]]


def releasable(record: Mapping[str, Any] | None) -> bool:
    return record is not None and record["status"] in RELEASABLE
