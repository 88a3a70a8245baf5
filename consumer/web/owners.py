"""Which instance owns a partition, and forwarding a request to it (as Kafka Streams' interactive queries).

Each instance advertises its HTTP base URL in its group consumer's `client.id` (`client_id_for`), so the
group's own metadata says where partition p lives: DescribeGroups lists every member with its client id
and assignment. Brokers that describe no members (the embedded Tansu does not) are covered by asking
the peers themselves: each instance answers `GET /api/instance` with its URL and owned partitions.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from ssl import SSLContext
from typing import Any
from urllib.parse import urlencode, urlsplit

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from consumer.kafka.admin import partition_counts
from consumer.kafka.partitioners import partition_of
from consumer.ops import logging as logs
from consumer.ops.exchange import Request, Response
from consumer.web.owner_state import BounceRow, MessageDetail, MessagePage, MessageRow
from consumer.web.routes import encoded_path, segment

CLIENT_ID_PREFIX = "sendtrack@"
FORWARDED_HEADER = "x-sendtrack-forwarded"  # a forwarded request is answered where it lands, never sent on
ROUTED_PARAM = "routed"  # the same mark on a redirect, where a header cannot travel
INSTANCE_PATH = "/api/instance"
# What /api/instance lists: the partitions this instance owns of the delivery stage's group, and of the quarantine
# stage's (address.signals in <group>.quarantine).
DELIVERY_PARTITIONS, ADDRESS_PARTITIONS = "partitions", "address_partitions"
STREAM_CHUNK = 64 * 1024

Lookup = Callable[[], dict[int, str]]  # partition -> advertised base URL of its owner

_log = logs.get("sendtrack.web.owners")


def client_id_for(advertised_url: str) -> str:
    """The group consumer's client.id: `sendtrack@http://10.0.0.5:8080`."""
    return CLIENT_ID_PREFIX + _checked_url(advertised_url)


def advertised_url_of(client_id: str) -> str | None:
    """The advertised URL in a client.id made by client_id_for; None for any other client."""
    if not client_id.startswith(CLIENT_ID_PREFIX):
        return None
    try:
        return _checked_url(client_id[len(CLIENT_ID_PREFIX) :])
    except ValueError:
        return None


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise ValueError(f"not an http(s) base URL: {url!r}")
    return url.rstrip("/")


def is_routed(request: Request) -> bool:
    """Already forwarded or redirected to the owner: answer here, whatever the map says."""
    return FORWARDED_HEADER in request.headers or ROUTED_PARAM in request.query


# -- where partitions live ------------------------------------------------------------------------------
def group_lookup(admin: AdminClient, group: str, topic: str, timeout_s: float = 5.0) -> Lookup:
    """The owners of `topic`'s partitions from the group's members (DescribeGroups)."""

    def lookup() -> dict[int, str]:
        description = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result()
        owners = {}
        for member in description.members:
            url = advertised_url_of(member.client_id or "")
            if url is None or member.assignment is None:
                continue
            owners.update((tp.partition, url) for tp in member.assignment.topic_partitions if tp.topic == topic)
        return owners

    return lookup


def peer_lookup(
    peers: Callable[[], Iterable[str]],
    timeout_s: float = 2.0,
    context: SSLContext | None = None,
    field: str = DELIVERY_PARTITIONS,
) -> Lookup:
    """The owners as the peers say themselves: each peer's GET /api/instance, the partitions listed in `field`
    (the delivery stage's, or the quarantine stage's: ADDRESS_PARTITIONS)."""

    def lookup() -> dict[int, str]:
        owners = {}
        for peer in peers():
            try:
                instance = _get_json(f"{peer}{INSTANCE_PATH}", timeout_s, context)
                owners.update((int(p), _checked_url(instance["url"])) for p in instance.get(field, ()))
            except (OSError, ValueError, KeyError, TypeError) as exc:  # a peer down or starting: the others answer
                _log.info("peer_unavailable", peer=peer, error=str(exc))
        return owners

    return lookup


def static_peers(urls: Iterable[str]) -> Callable[[], list[str]]:
    checked = [_checked_url(url) for url in urls]
    return lambda: checked


def dns_peers(host: str, port: int, scheme: str = "http") -> Callable[[], list[str]]:
    """Every address a name resolves to (a Kubernetes headless service), resolved at each refresh."""

    def peers() -> list[str]:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        return [f"{scheme}://[{a}]:{port}" if ":" in a else f"{scheme}://{a}:{port}" for a in sorted(addresses)]

    return peers


def first_answer(*lookups: Lookup) -> Lookup:
    """The first lookup that knows any owner: the group's metadata, then the peers."""

    def lookup() -> dict[int, str]:
        for each in lookups:
            try:
                owners = each()
            except Exception as exc:  # a broker or peer failure must not take the pages down
                _log.warning("owner_lookup_failed", error=str(exc))
                continue
            if owners:
                return owners
        return {}

    return lookup


class Owners:
    """The partition -> owner map, cached for a few seconds and refreshed when a partition is missing."""

    def __init__(self, lookup: Lookup, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._clock = clock
        self._owners: dict[int, str] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def owner_of(self, partition: int) -> str | None:
        with self._lock:
            stale = self._fetched_at is None or self._clock() - self._fetched_at > self._ttl_s
            if stale or partition not in self._owners:
                self._refresh()
            return self._owners.get(partition)

    def invalidate(self) -> None:
        with self._lock:
            self._fetched_at = None

    def _refresh(self) -> None:
        # A miss refreshes at most once a second: a partition nobody owns (mid-rebalance) costs one lookup.
        now = self._clock()
        if self._fetched_at is not None and now - self._fetched_at < min(1.0, self._ttl_s):
            return
        self._owners = self._lookup()
        self._fetched_at = now


class KeyPartitions:
    """The partition a keyed record of a topic is in: the producers' partitioner (consumer/kafka/partitioners.py)
    over the topic's partition count, asked of the broker at first use and again after `ttl_s` (partitions may be
    added) or a failure."""

    def __init__(
        self,
        partition_count: Callable[[], int],
        partitioner: str,
        ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._partition_count = partition_count
        self._partitioner = partitioner
        self._ttl_s = ttl_s
        self._clock = clock
        self._count: int | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def of(self, key: bytes) -> int:
        """Raises LookupError when the topic's partitions cannot be known (no such topic, no broker)."""
        with self._lock:
            if self._count is None or self._clock() - self._fetched_at > self._ttl_s:
                self._count = self._partition_count()
                self._fetched_at = self._clock()
            count = self._count
        return partition_of(key, count, self._partitioner)


def topic_partition_count(admin: AdminClient, topic: str, timeout_s: float = 5.0) -> Callable[[], int]:
    """How many partitions `topic` has, from the cluster's metadata; LookupError when it is unknown. Every topic's
    metadata is asked for: a request naming the topic could create it where brokers auto-create topics."""

    def partition_count() -> int:
        try:
            count = partition_counts(admin, (topic,), timeout_s).get(topic)
        except KafkaException as exc:
            raise LookupError(f"{topic}: no metadata: {exc}") from None
        if not count:
            raise LookupError(f"{topic}: no such topic")
        return count

    return partition_count


# -- forwarding -----------------------------------------------------------------------------------------
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}
# Credentials meant for us or for a proxy on the way, never for the owner: it needs only Authorization.
_NOT_FORWARDED = _HOP_HEADERS | {"cookie", "proxy-authorization"}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # a redirect comes back as the response: the owner never bounces us around


def forward(request: Request, owner_url: str, timeout_s: float = 5.0, context: SSLContext | None = None) -> Response:
    """The owner's answer to the same request, marked as forwarded. Raises OSError when it cannot be reached."""
    headers = {name: value for name, value in request.headers.items() if name not in _NOT_FORWARDED}
    headers[FORWARDED_HEADER] = "1"
    url = owner_url + encoded_path(request) + _query_string(request)
    outgoing = urllib.request.Request(url, request.body or None, headers, method=request.method)
    opener = urllib.request.build_opener(_NoRedirects, urllib.request.HTTPSHandler(context=context))
    try:
        answer = opener.open(outgoing, timeout=timeout_s)
    except urllib.error.HTTPError as refused:  # 4xx/5xx and the 3xx we refused to follow
        with refused:
            return _response(refused.code, refused.headers, refused.read())
    if answer.headers.get("Content-Length") is None:  # a streamed answer (an export): passed on as it comes
        return _response(answer.status, answer.headers, _chunks(answer))
    with answer:
        return _response(answer.status, answer.headers, answer.read())


def _chunks(answer: Any) -> Iterator[bytes]:
    with answer:
        while chunk := answer.read(STREAM_CHUNK):
            yield chunk


def redirect(request: Request, owner_url: str) -> Response:
    """Send the browser to the owner itself, marked as routed so the owner answers whatever its map says."""
    query = {**request.query, ROUTED_PARAM: ["1"]}
    location = owner_url + encoded_path(request) + _query_string(request, query)
    return Response(307, b"", "text/plain", [("Location", location)])


def _query_string(request: Request, query: dict[str, list[str]] | None = None) -> str:
    pairs = [(k, v) for k, values in (query or request.query).items() for v in values]
    return "?" + urlencode(pairs) if pairs else ""


# -- the owner's sending logs for a page made here -------------------------------------------------------------
class OwnerUnreachable(Exception):
    """The owner did not answer at all: the browser may go there itself (`redirect`)."""


class OwnerAnswerError(Exception):
    """The owner answered, but not with the sending logs (it lost the partition, or failed)."""


class OwnerClient:
    """The message-level answers of another instance (its JSON API), for a delivery page made here.

    The page itself is this instance's: its form tokens are checked here when the user acts (by a secret that
    may be this process's own) and its live-update cursor is this view's. Only the sending logs, which live
    with the owner, are asked of it, with the user's credentials, marked as forwarded.
    """

    def __init__(
        self, request: Request, owner_url: str, timeout_s: float = 5.0, context: SSLContext | None = None
    ) -> None:
        self._request = request
        self._owner_url = owner_url
        self._timeout_s = timeout_s
        self._context = context

    def messages(self, delivery_id: str, status: str | None, after: str | None, limit: int) -> MessagePage:
        query = {"limit": [str(limit)]}
        query |= {"status": [status]} if status else {}
        query |= {"after": [after]} if after else {}
        body = self._ask(delivery_id, query)
        if body is None:  # the owner's view has not read the delivery yet
            raise OwnerAnswerError(f"{self._owner_url} does not know {delivery_id!r} yet")
        return MessagePage([MessageRow(**row) for row in body["messages"]], body["next_after"])

    def message(self, delivery_id: str, message_id: str) -> MessageDetail | None:
        body = self._ask(delivery_id, {"message_id": [message_id]})
        if body is None:
            return None
        body.pop("delivery_id", None)
        bounces = [BounceRow(**bounce) for bounce in body.pop("bounces")]
        return MessageDetail(**body, bounces=bounces)

    def _ask(self, delivery_id: str, query: dict[str, list[str]]) -> dict[str, Any] | None:
        """The owner's JSON answer about the delivery's messages; None when it answers 404."""
        path, raw_path = (f"/api/deliveries/{d}/messages" for d in (delivery_id, segment(delivery_id)))
        asked = replace(self._request, method="GET", path=path, raw_path=raw_path, query=query, body=b"")
        return ask_json(asked, self._owner_url, self._timeout_s, self._context)


def ask_json(
    asked: Request, owner_url: str, timeout_s: float = 5.0, context: SSLContext | None = None
) -> dict[str, Any] | None:
    """The owner's JSON answer to a request made for it (with the user's credentials, marked as forwarded); None
    when it answers 404. OwnerUnreachable when it does not answer, OwnerAnswerError when it answers otherwise."""
    asked = replace(asked, headers={**asked.headers, "accept": "application/json"})
    try:
        answer = forward(asked, owner_url, timeout_s, context)
    except OSError as exc:
        raise OwnerUnreachable(str(exc)) from exc
    body = answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise OwnerAnswerError(f"{owner_url} answered {answer.status}: {body[:200]!r}")
    return json.loads(body)


def _response(status: int, headers: Any, body: bytes | Iterator[bytes]) -> Response:
    kept = [(k, v) for k, v in headers.items() if k.lower() not in _HOP_HEADERS | {"content-type", "date", "server"}]
    return Response(status, body, headers.get("Content-Type", "application/octet-stream"), kept)


def _get_json(url: str, timeout_s: float, context: SSLContext | None) -> Any:
    opener = urllib.request.build_opener(_NoRedirects, urllib.request.HTTPSHandler(context=context))
    with opener.open(urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=timeout_s) as r:
        return json.loads(r.read())
