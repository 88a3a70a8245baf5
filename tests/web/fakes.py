"""Fakes of what the Deployment view reads and writes: KPI records, an owner's state, a quarantine's records, a
publisher."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
from prometheus_client import CollectorRegistry

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI
from consumer.core.events import Fact
from consumer.core.status import Bounce, MessageState
from consumer.kafka.partitioners import partition_of
from consumer.kafka.topics import Topics
from consumer.ops.exchange import Request, Response
from consumer.quarantine.commands import command_key
from consumer.quarantine.records import status_record
from consumer.quarantine.rules import Rules
from consumer.quarantine.signals import Signal, normal_address
from consumer.quarantine.state import AddressState, Limits
from consumer.web.actions import PublishError
from consumer.web.addresses import AddressPlacement
from consumer.web.app import WebApp
from consumer.web.auth import Auth
from consumer.web.owner_state import MessageDetail, MessagePage, message_detail, status_page
from consumer.web.owners import KeyPartitions, Owners
from consumer.web.table import KpiTable

_KPI_CODEC = AvroCodec.named(DELIVERY_KPI)


def kpi(delivery_id: str, **fields: Any) -> dict[str, Any]:
    """A complete DeliveryKpi record (schemas/delivery_kpi.avsc) with the given fields."""
    record = {
        "delivery_id": delivery_id,
        "state": "SENDING",
        "efs": False,
        "to_deliver": 1000,
        "processed": 0,
        "sent": 0,
        "failed": 0,
        "pending": 0,
        "delivered_pct": 0.0,
        "bounces_errors_pct": 0.0,
        "opens_unique": 0,
        "clicks_unique": 0,
        "opens_total": 0,
        "clicks_total": 0,
        "complaints": 0,
        "failures_by_reason": {},
        "open_rate_pct": 0.0,
        "click_through_rate_pct": 0.0,
        "progress_pct": 0.0,
        "final": False,
        "confirmations_rejected": 0,
        "version": 1,
        "updated_at": 1_795_000_000_000,
    }
    unknown = set(fields) - set(record)
    assert not unknown, unknown
    return _KPI_CODEC.decode(_KPI_CODEC.encode(record | fields))  # as the topic has it: every field of the schema


@dataclass
class FakePublisher:
    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    failing: bool = False

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        if self.failing:
            raise PublishError("broker down")
        self.records.append((topic, key, value))


@dataclass
class FakeOwnerState:
    """An owner's state as the service would have it: message states per delivery, in message id order."""

    partitions: set[int] = field(default_factory=set)
    stored: dict[str, dict[str, MessageState]] = field(default_factory=dict)  # message states per delivery
    efs: bool = False
    final: bool = False
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    kpis: dict[str, dict[str, Any]] = field(default_factory=dict)  # what the owner published itself

    def owned_partitions(self) -> set[int]:
        return set(self.partitions)

    def delivery_kpi(self, delivery_id: str) -> dict[str, Any] | None:
        return self.kpis.get(delivery_id)

    def messages(self, delivery_id: str, status: str | None, after: str | None, limit: int) -> MessagePage:
        self.calls.append(("messages", delivery_id, status, after, limit))
        ordered = sorted(self.stored.get(delivery_id, {}).items())
        pending = ((m, s) for m, s in ordered if after is None or m > after)
        return status_page(pending, self.efs, self.final, status, limit)

    def message(self, delivery_id: str, message_id: str) -> MessageDetail | None:
        state = self.stored.get(delivery_id, {}).get(message_id)
        return None if state is None else message_detail(message_id, state, self.efs, self.final)


def request(
    path: str,
    method: str = "GET",
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    secure: bool = False,
    client: str = "127.0.0.1:5000",
) -> Request:
    return Request(method, path, query or {}, {"host": "view.test", **(headers or {})}, body, client, secure)


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


ROLES = {
    "alice": ["start_deliveries"],  # may confirm sends
    "bob": ["viewer"],  # may look at deliveries
    "carol": ["view_addresses"],  # may see address pages
    "dave": ["view_addresses", "release_addresses"],  # and release addresses
}


def write_web_config(directory: Path) -> Path:
    """The users of ROLES with their roles; passwords are `<name>-pw`."""
    path = directory / "web.yml"
    hashes = {user: bcrypt.hashpw(f"{user}-pw".encode(), bcrypt.gensalt(4)).decode() for user in ROLES}
    path.write_text(
        "basic_auth_users:\n"
        + "".join(f"  {user}: '{hashed}'\n" for user, hashed in hashes.items())
        + "sendtrack_roles:\n"
        + "".join(f"  {user}: [{', '.join(roles)}]\n" for user, roles in ROLES.items())
    )
    return path


ADDRESS_PARTITIONS = 4


@dataclass
class FakeAddressState:
    """A quarantine stage's committed records, by normal address, for the partitions it owns."""

    partitions: set[int] = field(default_factory=lambda: set(range(ADDRESS_PARTITIONS)))
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def owned_partitions(self) -> set[int]:
        return set(self.partitions)

    def committed_status(self, address: str) -> dict[str, Any] | None:
        self.asked.append(address)
        record = self.records.get(address)
        owned = record is not None and address_partition(address) in self.partitions
        return record if owned else None

    def learn(self, address: str, *signals: Signal) -> dict[str, Any]:
        """The record the quarantine's own rules give the address after these signals."""
        state = AddressState.new(normal_address(address), Limits())
        for signal in signals:
            state.apply(signal, Rules(), Limits())
        record = status_record(state, max(s.occurred_at for s in signals), Rules())
        self.records[state.address] = record
        return record


def address_partition(address: str) -> int:
    return partition_of(command_key(address), ADDRESS_PARTITIONS, "consistent_random")


def address_placement(state: FakeAddressState | None, owners: Owners | None = None) -> AddressPlacement:
    return AddressPlacement(state, owners, KeyPartitions(lambda: ADDRESS_PARTITIONS, "consistent_random"))


def hard_bounced(reason: str) -> MessageState:
    return MessageState(int(Fact.RELAYED | Fact.HARD_BOUNCE), 1, hard=Bounce(1_795_000_000_000, 1, "e", reason))


class View:
    """A WebApp over fakes: d1 sending (partition 0, owned here, 120 failed messages), d2 awaiting confirmation."""

    def __init__(
        self,
        auth: Auth,
        owners: Owners | None = None,
        owned: set[int] | None = None,
        addresses: AddressPlacement | None = None,
        quarantine: bool = True,
    ) -> None:
        """`addresses`: every address partition owned here (a FakeAddressState) unless given; none without
        `quarantine`."""
        self.kpis = KpiTable()
        self.kpis.apply(0, kpi("d1", processed=10, sent=9, failed=1, delivered_pct=90.0, bounces_errors_pct=10.0))
        self.kpis.apply(1, kpi("d2", state="AWAITING_CONFIRMATION", to_deliver=2_000_000))
        self.owner_state = FakeOwnerState({0} if owned is None else owned)
        reasons = ("mailbox_full", "user_unknown")
        self.owner_state.stored["d1"] = {f"m{i:03}": hard_bounced(reasons[i % 2]) for i in range(120)}
        self.owner_state.stored["d1"]["m200"] = MessageState(int(Fact.RELAYED | Fact.DELIVERED), 2)
        self.publisher = FakePublisher()
        self.registry = CollectorRegistry()
        self.addresses = addresses or address_placement(FakeAddressState())
        placement = self.addresses if quarantine else None
        self.app = WebApp(
            self.kpis,
            owners,
            auth,
            self.publisher,
            self.owner_state,
            self.registry,
            topics=Topics(),
            advertised_url="http://me.test",
            heartbeat_s=0.05,
            addresses=placement,
        )

    def get(self, path: str, headers: dict | None = None, **query: str) -> Response:
        response = self.app.handle(request(path, query={k: [v] for k, v in query.items()}, headers=headers))
        assert response is not None, path
        return response

    def post(self, path: str, body: bytes, headers: dict) -> Response:
        response = self.app.handle(request(path, "POST", headers=headers, body=body))
        assert response is not None, path
        return response

    def denied(self, action: str, reason: str) -> float:
        labels = {"action": action, "reason": reason}
        return self.registry.get_sample_value("sendtrack_web_denied_actions_total", labels) or 0


class Recorder:
    """An owner that records what reached it."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.requests: list[Request] = []

    def handle(self, incoming: Request) -> Response:
        self.requests.append(incoming)
        return self.response
