"""What a campaign user can do from the view: confirm a send, ask for Compute stats. Every refusal is audited.

Trust model: the actor of a confirmation is the verified identity of the request, never anything the
request says. The core accepts a CONFIRMED event only when its `actor_roles` hold `start_deliveries`,
so a refused confirmation by a verified user is published too, with that user's (insufficient) roles:
the core records it as a rejection (`confirmations_rejected` in the KPI, its log and metric). Its
event id derives from (delivery, user), so however often one user insists, the core counts one refusal
and the delivery's state stays bounded; this view's log and counter see every attempt. Attempts without
a verified identity publish nothing: there is no actor to record.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaException, Producer
from prometheus_client import CollectorRegistry, Counter

from consumer.codec.avro import AvroCodec
from consumer.codec.control import COMPUTE_STATS
from consumer.codec.errors import InvalidEvent
from consumer.codec.schemas import ADDRESS_SIGNAL, DELIVERY_EVENT
from consumer.kafka.topics import Topics
from consumer.ops import logging as logs
from consumer.quarantine.commands import command_key, command_signal
from consumer.quarantine.intake import check_signal
from consumer.quarantine.privacy import address_ref
from consumer.quarantine.signals import RELEASE
from consumer.web.auth import Auth, Identity

CONFIRM = "confirm"
RELEASE_ACTION = "release"  # of an address
AWAITING_CONFIRMATION = "AWAITING_CONFIRMATION"
_REFUSALS = uuid.UUID("6f1d2c1e-6d0b-4a53-9d1c-2a7f0c3e5b10")  # namespace of refused confirmations' event ids


class Publisher(Protocol):
    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Return once the record is acknowledged; raise PublishError when it is not."""


class PublishError(RuntimeError):
    pass


class KafkaPublisher:
    """An idempotent producer that waits for each record's acknowledgement (actions are rare).

    The producer is made at the first action, so building the view starts no Kafka client.
    """

    def __init__(self, base: Mapping[str, Any], timeout_s: float = 10.0) -> None:
        self._config = {**base, "enable.idempotence": True, "acks": "all"}
        self._timeout_s = timeout_s
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        producer = self._made()
        errors: list[Any] = []
        try:
            producer.produce(topic, value, key, on_delivery=lambda err, _msg: errors.append(err))
        except (KafkaException, BufferError) as exc:
            raise PublishError(str(exc)) from None
        producer.flush(self._timeout_s)  # other threads' records may be in flight too: ours is in `errors`
        if not errors or errors[0] is not None:
            raise PublishError(f"{topic}: not acknowledged: {errors[0] if errors else 'timed out'}")

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(self._timeout_s)

    def _made(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self._config)
            return self._producer


@dataclass(frozen=True)
class Outcome:
    action: str
    status: int  # the HTTP status to answer with
    message: str  # for people
    reason: str | None = None  # why it was refused: a bounded label (metrics, logs)
    event_id: str | None = None


class Actions:
    def __init__(
        self,
        publisher: Publisher,
        auth: Auth,
        registry: CollectorRegistry,
        topics: Topics,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._publisher = publisher
        self._auth = auth
        self._topics = topics
        self._clock = clock
        self._new_id = new_id
        self._codec = AvroCodec.named(DELIVERY_EVENT)
        self._signals = AvroCodec.named(ADDRESS_SIGNAL)
        self._log = logs.get("sendtrack.web.actions")
        self._done = Counter("sendtrack_web_actions", "Actions published from the view", ["action"], registry=registry)
        self._denied = Counter(
            "sendtrack_web_denied_actions", "Actions the view refused", ["action", "reason"], registry=registry
        )

    def confirm(self, identity: Identity | None, delivery_id: str, kpi: Mapping[str, Any] | None) -> Outcome:
        refused = self._precheck(CONFIRM, identity, delivery_id, kpi)
        if refused is not None:
            return refused
        assert identity is not None and kpi is not None
        if kpi["state"] != AWAITING_CONFIRMATION:
            return self.deny(CONFIRM, "not_awaiting_confirmation", identity, delivery_id, 409)
        if not self._auth.can_confirm(identity):
            # Published all the same: the core records the refusal (see the module's trust model).
            event_id = str(uuid.uuid5(_REFUSALS, f"{delivery_id}\0{identity.user}"))
            problem = self._publish_confirmed(identity, delivery_id, event_id)
            return problem or self.deny(CONFIRM, "missing_role", identity, delivery_id, 403, _REFUSED_CONFIRMATION)
        event_id = self._new_id()
        return self._publish_confirmed(identity, delivery_id, event_id) or self._done_outcome(
            CONFIRM, identity, {"delivery_id": delivery_id}, event_id
        )

    def compute_stats(self, identity: Identity | None, delivery_id: str, kpi: Mapping[str, Any] | None) -> Outcome:
        refused = self._precheck(COMPUTE_STATS, identity, delivery_id, kpi)
        if refused is not None:
            return refused
        assert identity is not None
        if not self._auth.can_act(identity):
            return self.deny(COMPUTE_STATS, "missing_role", identity, delivery_id, 403)
        command = json.dumps({"command": COMPUTE_STATS, "delivery_id": delivery_id}).encode()
        # Keyed by delivery_id: it lands on the partition, hence the instance, that owns the delivery.
        problem = self._publish(COMPUTE_STATS, self._topics.control, delivery_id, command)
        return problem or self._done_outcome(COMPUTE_STATS, identity, {"delivery_id": delivery_id}, None)

    def release(self, identity: Identity | None, address: str) -> Outcome:
        """Publish a RELEASE of the address (consumer/quarantine/commands.py, as `sendtrack quarantine release`)
        by a verified user with release_addresses. Nothing is published for a refusal: the quarantine has no
        record of refused releases; this view's log line (the address as its keyed hash) and counter are the audit."""
        if identity is None:
            return self.deny_address(RELEASE_ACTION, "unauthenticated", identity, address, 401)
        if not identity.authenticated:
            return self.deny_address(RELEASE_ACTION, "read_only", identity, address, 403)
        if not self._auth.can_release_addresses(identity):
            return self.deny_address(RELEASE_ACTION, "missing_role", identity, address, 403, _REFUSED_RELEASE)
        event_id = self._new_id()
        signal = command_signal(RELEASE, address, identity.user, int(self._clock() * 1000), event_id)
        try:  # as the quarantine stage checks it: what it would dead-letter (a user name too long) is refused here
            check_signal(signal, command_key(address), signal["occurred_at"])
        except InvalidEvent as exc:  # its text never quotes the address
            return self.deny_address(RELEASE_ACTION, exc.code, identity, address, 400, f"Cannot be recorded: {exc}")
        about = {"address_ref": address_ref(address)}
        try:
            self._publisher.publish(self._topics.address_signals, command_key(address), self._signals.encode(signal))
        except PublishError as exc:
            return self._unpublished(RELEASE_ACTION, about, exc)
        return self._done_outcome(RELEASE_ACTION, identity, about, event_id)

    def deny(
        self, action: str, reason: str, identity: Identity | None, delivery_id: str, status: int, message: str = ""
    ) -> Outcome:
        """Refuse an action on a delivery, and say so: one log line and the denied counter."""
        return self._refuse(action, reason, identity, {"delivery_id": delivery_id}, status, message)

    def deny_address(
        self, action: str, reason: str, identity: Identity | None, address: str, status: int, message: str = ""
    ) -> Outcome:
        """Refuse an action on an address; its log line names the address only by its keyed hash."""
        return self._refuse(action, reason, identity, {"address_ref": address_ref(address)}, status, message)

    def _refuse(
        self,
        action: str,
        reason: str,
        identity: Identity | None,
        about: Mapping[str, str],
        status: int,
        message: str = "",
    ) -> Outcome:
        self._denied.labels(action, reason).inc()
        self._log.warning(
            "web_action_denied",
            action=action,
            reason=reason,
            user=identity.user if identity is not None else None,
            auth=identity.method if identity is not None else None,
            **about,
        )
        return Outcome(action, status, message or MESSAGES.get(reason, "refused"), reason)

    def _precheck(
        self, action: str, identity: Identity | None, delivery_id: str, kpi: Mapping[str, Any] | None
    ) -> Outcome | None:
        """Refused unless a verified user asks about a known delivery."""
        if identity is None:
            return self.deny(action, "unauthenticated", identity, delivery_id, 401)
        if not identity.authenticated:
            return self.deny(action, "read_only", identity, delivery_id, 403)
        if kpi is None:
            return self.deny(action, "unknown_delivery", identity, delivery_id, 404)
        return None

    def _publish_confirmed(self, identity: Identity, delivery_id: str, event_id: str) -> Outcome | None:
        event = {
            "event_id": event_id,
            "delivery_id": delivery_id,
            "type": "CONFIRMED",
            "occurred_at": int(self._clock() * 1000),
            "actor": identity.user,
            "actor_roles": sorted(identity.roles),
        }
        return self._publish(CONFIRM, self._topics.deliveries, delivery_id, self._codec.encode(event))

    def _publish(self, action: str, topic: str, delivery_id: str, value: bytes) -> Outcome | None:
        """None once published; else the 503 outcome."""
        try:
            self._publisher.publish(topic, delivery_id.encode(), value)
        except PublishError as exc:
            return self._unpublished(action, {"delivery_id": delivery_id}, exc)
        return None

    def _unpublished(self, action: str, about: Mapping[str, str], exc: PublishError) -> Outcome:
        self._log.error("web_action_not_published", action=action, error=str(exc), **about)
        return Outcome(action, 503, "Kafka did not acknowledge the request; try again.", "unavailable")

    def _done_outcome(self, action: str, identity: Identity, about: Mapping[str, str], event_id: str | None) -> Outcome:
        """Published: one log line (`about`: the delivery id, or the address's keyed hash) and the actions counter."""
        self._done.labels(action).inc()
        self._log.info(
            "web_action", action=action, user=identity.user, auth=identity.method, event_id=event_id, **about
        )
        return Outcome(action, 202, MESSAGES[action], event_id=event_id)


_REFUSED_RELEASE = "Releasing an address needs the Release addresses role; this refused attempt is logged."
_REFUSED_CONFIRMATION = "Confirming a send needs the Start deliveries role; this refused attempt is recorded."
MESSAGES = {
    CONFIRM: "Confirmation sent: the delivery starts once sendtrack applies it.",
    COMPUTE_STATS: "Compute stats requested: the owning instance recomputes and republishes the KPIs.",
    RELEASE_ACTION: "Release sent: the address is valid again once the quarantine applies it.",
    "unauthenticated": "Sign in to do this.",
    "read_only": "This view is read-only: no users are configured (--web-config).",
    "missing_role": "You lack the role this action needs.",
    "unknown_delivery": "No such delivery.",
    "not_awaiting_confirmation": "This delivery is not awaiting confirmation.",
}
