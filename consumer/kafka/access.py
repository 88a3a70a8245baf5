"""Reaching Kafka and being let in. A refused TLS handshake, refused credentials and a missing ACL are final:
retrying cannot help, so each becomes one line that says what was refused, and no client waits it out.

`reach` is the first call of every tool and of the service: it answers within `timeout_s` (a TLS or credential
refusal ends the wait at once). `denial` turns a Kafka error into the permission it means was missing, named
from what the client was doing (READ of the topic it consumed, WRITE of the one it produced to, ...).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient, ClusterMetadata

from consumer.kafka.config import redacted

_REFUSALS = (KafkaError._SSL, KafkaError._AUTHENTICATION)
# With TLS 1.3 the broker checks the client's certificate after the client finished its handshake, so a refused
# (unknown, expired) certificate arrives as an alert on the next receive, a transport error of librdkafka's.
_TLS_ALERT = re.compile(r"error:[0-9A-F]+:SSL routines::(ssl/tls alert .+)$")


class Refused(Exception):
    """Kafka refuses this client: the TLS handshake, the credentials or a permission. Final: never retried."""


class Denied(Refused):
    """A request refused for want of an ACL: the operation and the resource it was refused on."""

    def __init__(self, operation: str, resource: str, name: str | None = None) -> None:
        where = f"{resource} {name!r}" if name is not None else f"the {resource}"
        super().__init__(f"Kafka refused {operation} on {where}: the principal lacks that ACL")
        self.operation, self.resource, self.name = operation, resource, name


class Unreachable(Exception):
    """No answer from Kafka in time: it may be starting, or the network is down."""


def denial(
    error: KafkaError | None,
    topic: str | None = None,
    *,
    topic_operation: str = "READ",
    group: str | None = None,
    group_operation: str = "READ",
    transactional_id: str | None = None,
    cluster_operation: str = "IDEMPOTENT_WRITE",
) -> Denied | None:
    """The missing permission `error` means for a client that did `topic_operation` on `topic`, used `group`
    and `transactional_id`; None when the error is no authorization failure."""
    code = error.code() if error is not None else None
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return Denied(topic_operation, "topic", topic)
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return Denied(group_operation, "group", group)
    if code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        return Denied("WRITE", "transactional id", transactional_id)
    if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        return Denied(cluster_operation, "cluster")
    return None


def reader_denial(error: KafkaError | None, topic: str, group: str) -> Denied | None:
    """For a consumer that reads assigned partitions and never commits: its group is only looked up
    (FindCoordinator, which needs DESCRIBE on the group)."""
    return denial(error, topic, group=group, group_operation="DESCRIBE")


def error_of(exc: BaseException) -> KafkaError | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None


def reach(config: Mapping[str, Any], timeout_s: float) -> ClusterMetadata:
    """The cluster's metadata as this client sees it; Refused at the first TLS or credential refusal,
    Unreachable when no broker answered within `timeout_s`, ValueError for a configuration librdkafka rejects."""
    errors: list[KafkaError] = []
    try:
        admin = AdminClient({**config, "error_cb": errors.append})
    except KafkaException as exc:
        raise ValueError(scrub(f"invalid Kafka configuration: {exc.args[0].str()}", config)) from None
    where = config["bootstrap.servers"]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return admin.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
        except KafkaException:
            admin.poll(0)  # serves error_cb
        refused = next((e for e in errors if e.code() in _REFUSALS or _alert(e)), None)
        if refused is not None:
            raise Refused(scrub(_refusal(where, refused), config))
        if time.monotonic() >= deadline:
            raise Unreachable(scrub(_unreachable(where, errors, timeout_s), config))


def missing_permission(
    config: Mapping[str, Any], operations: Mapping[str, Iterable[str]], timeout_s: float
) -> Denied | None:
    """The first permission this client lacks on the topics (topic -> what it does there: READ, WRITE), from the
    operations Kafka says it may do (KIP-430); None when it has them all, or Kafka cannot tell (no answer, a
    topic that does not exist: whatever comes next says so)."""
    admin = AdminClient(dict(config))
    described = admin.describe_topics(
        TopicCollection(list(operations)), request_timeout=timeout_s, include_authorized_operations=True
    )
    for topic, future in described.items():
        wanted = list(operations[topic])
        try:
            allowed = future.result().authorized_operations
        except KafkaException as exc:  # a topic it may not even describe is refused like an absent one
            denied = denial(error_of(exc), topic, topic_operation=wanted[0])
            if denied is not None:
                return denied
            continue
        missing = [operation for operation in wanted if allowed is not None and AclOperation[operation] not in allowed]
        if missing:
            return Denied(missing[0], "topic", topic)
    return None


def _alert(error: KafkaError) -> str | None:
    found = _TLS_ALERT.search(_reason(error)) if error.code() == KafkaError._TRANSPORT else None
    return found.group(1) if found else None


def _refusal(where: str, refused: KafkaError) -> str:
    alert = _alert(refused)
    if alert is not None:
        return f"TLS handshake with Kafka at {where} failed: the broker refused the client certificate ({alert})"
    if refused.code() == KafkaError._SSL:
        return f"TLS handshake with Kafka at {where} failed: {_reason(refused)}"
    return f"Kafka at {where} refused the credentials: {_reason(refused)}"


def _unreachable(where: str, errors: list[KafkaError], timeout_s: float) -> str:
    telling = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN] or errors
    reason = _reason(telling[-1]) if telling else "no answer"
    return f"cannot reach Kafka at {where} ({reason}) within {timeout_s:g} s"


def _reason(error: KafkaError) -> str:
    """librdkafka's message without the broker name, the state it was in, or a preamble the line already says."""
    text = re.sub(r"^\S+/(bootstrap|\d+): ", "", error.str())
    text = re.sub(r" \(after \d+ms in state \w+\)$", "", text).removeprefix("SSL handshake failed: ")
    connect_failed = re.match(r"Connect to \S+ failed: (.+)$", text)
    return connect_failed.group(1).lower() if connect_failed else text


def scrub(text: str, config: Mapping[str, Any]) -> str:
    """The text with every secret of the configuration replaced by ***."""
    shown = redacted(config)
    for name, value in config.items():
        if shown.get(name) == "***" and isinstance(value, str) and value:
            text = text.replace(value, "***")
    return text
