"""SendGrid event webhook payloads (https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event):
a JSON array of events per source record (a single event object is accepted too). The platform's ids are custom
args, which SendGrid puts as top-level keys of each event; the message id falls back to `sg_message_id` (one per
recipient). A record maps as a whole: one unmappable event dead-letters the record."""

from __future__ import annotations

import json
from typing import Any

from consumer.ingest.classifier import Kind
from consumer.ingest.event_ids import event_id
from consumer.ingest.formats.common import (
    Ids,
    JsonFormat,
    Mapped,
    Node,
    UnmappableRecord,
    event,
    failure,
    require_ids,
    unknown_type,
)

PREFIX = "sg"
_PLAIN = {"processed": "RELAYED", "delivered": "DELIVERED", "open": "OPEN", "spamreport": "COMPLAINT"}
# Subscription changes and account events say nothing about a message's status.
_NO_STATUS = frozenset({"unsubscribe", "group_unsubscribe", "group_resubscribe", "account_status_change"})
_BOUNCE_VERDICTS: dict[str, Kind] = {"bounce": "hard", "blocked": "soft"}  # SendGrid suppresses only "bounce"
_KNOWN = (*_PLAIN, *_NO_STATUS, "click", "deferred", "bounce", "dropped")


class SendGrid(JsonFormat):
    name = "sendgrid"

    def map_record(self, record: Any) -> list[Mapped]:
        items = record if isinstance(record, list) else [record]
        out: list[Mapped] = []
        for index, item in enumerate(items):
            out.extend(self._event(Node.of(item, f"[{index}]"), item))
        return out

    def _event(self, ev: Node, raw: Any) -> list[Mapped]:
        kind = ev.required_text("event", 64)
        if kind in _NO_STATUS:
            return []
        if kind not in _KNOWN:
            raise unknown_type(ev.where("event"), kind, _KNOWN)
        ids = self._ids(ev)
        at = ev.epoch_seconds("timestamp")
        address = ev.text("email")
        eid = _event_id(ev, raw)
        if kind in _PLAIN:
            return [Mapped(event(eid, ids, _PLAIN[kind], at, address=address))]
        if kind == "click":
            return [Mapped(event(eid, ids, "CLICK", at, url=ev.required_text("url", None), address=address))]
        if kind == "deferred":  # SendGrid retries
            verdict = self.classify(None, None, ev.text("response", None), None)
            # SendGrid counts attempts from 1 (its first deferral says "1"); the contract counts from 0.
            attempt = max(0, ev.attempt("attempt") - 1)
            return [failure(eid, ids, at, verdict, source_kind="soft", attempt=attempt, address=address)]
        if kind == "dropped":  # never sent: a suppressed or invalid address, or rejected content
            reason = ev.text("reason", None)
            verdict = self.classify(
                None, None, None, f"sendgrid-dropped:{reason}"
            )  # the reason is a category, not a reply
            return [failure(eid, ids, at, verdict, source_kind="hard", address=address)]
        bounce_type = ev.text("type", 32) or "bounce"
        category = ev.text("bounce_classification", 128)
        verdict = self.classify(None, ev.text("status", 32), ev.text("reason", None), f"sendgrid:{category}")
        return [failure(eid, ids, at, verdict, source_kind=_BOUNCE_VERDICTS.get(bounce_type), address=address)]

    def _ids(self, ev: Node) -> Ids:
        message_id = ev.ident(self.ids.message_id) or ev.ident("sg_message_id")
        return require_ids(ev.ident(self.ids.delivery_id), message_id, self.ids, ev.path)


def _event_id(ev: Node, raw: Any) -> str:
    """SendGrid's own event id; without one (older payloads), the event's whole content identifies it."""
    sg_event_id = ev.text("sg_event_id", 256)
    if sg_event_id is not None:
        return event_id(PREFIX, sg_event_id)
    try:
        content = json.dumps(raw, sort_keys=True, ensure_ascii=True)
    except RecursionError:
        raise UnmappableRecord(ev.where("sg_event_id"), "missing, and the event is too deeply nested") from None
    return event_id(PREFIX, "content", content)
