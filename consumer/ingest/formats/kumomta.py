"""KumoMTA log records (https://docs.kumomta.com/reference/log_record/), one JSON object per source record,
as a log hook publishes them. The platform's ids come from the record's `meta` (the injector sets them and the
logger lists them in its `meta` option); for Feedback records also from the ARF report's decoded X-KumoRef
trace (`include_meta_names`). The message id falls back to KumoMTA's spool id (one message per recipient)."""

from __future__ import annotations

from typing import Any

from consumer.ingest.classifier import Classification, Kind
from consumer.ingest.event_ids import event_id
from consumer.ingest.formats.common import (
    NOT_COMPLAINTS,
    Ids,
    JsonFormat,
    Mapped,
    Node,
    event,
    failure,
    require_ids,
    unknown_type,
)

PREFIX = "kumo"
_PLAIN = {"Reception": "RELAYED", "Delivery": "DELIVERED"}
# Failures and the verdict KumoMTA's record type gives (None: the classification decides).
_FAILURES: dict[str, Kind | None] = {"TransientFailure": "soft", "Bounce": None, "OOB": None, "AdminBounce": None}
# Types that say nothing about an outgoing message's status: inbound SMTP rejections, scheduling explanations.
_NO_STATUS = frozenset({"Rejection", "Delay"})
_KNOWN = (*_PLAIN, *_FAILURES, *_NO_STATUS, "Expiration", "Feedback")
_UNCATEGORIZED = "Uncategorized"


class KumoMta(JsonFormat):
    name = "kumomta"

    def map_record(self, record: Any) -> list[Mapped]:
        rec = Node.of(record, "")
        record_type = rec.required_text("type", 64)
        if record_type in _NO_STATUS:
            return []
        if record_type not in _KNOWN:
            raise unknown_type("type", record_type, _KNOWN)
        trace = _supplemental_trace(rec) if record_type == "Feedback" else None
        address = (trace.text("recipient") if trace else None) or rec.text("recipient")
        at = rec.epoch_seconds("timestamp")
        attempt = rec.attempt("num_attempts")
        ids = self._ids(rec, trace)
        eid = event_id(PREFIX, rec.required_text("id", 256), record_type, at, attempt, address)

        if record_type in _PLAIN:
            return [Mapped(event(eid, ids, _PLAIN[record_type], at, attempt=attempt, address=address))]
        if record_type == "Feedback":
            if _feedback_type(rec) in NOT_COMPLAINTS:
                return []
            return [Mapped(event(eid, ids, "COMPLAINT", at, attempt=attempt, address=address))]
        verdict = self._classify(rec)
        if record_type == "Expiration":  # the queue lifetime ran out: final, whatever the last response was
            return [failure(eid, ids, at, verdict, event_type="RETRIES_EXHAUSTED", attempt=attempt, address=address)]
        return [failure(eid, ids, at, verdict, source_kind=_FAILURES[record_type], attempt=attempt, address=address)]

    def _ids(self, rec: Node, trace: Node | None) -> Ids:
        meta = rec.optional_child("meta")
        sources = [node for node in (meta, trace) if node is not None]
        delivery_id = next((n.ident(self.ids.delivery_id) for n in sources if n.has(self.ids.delivery_id)), None)
        message_id = next((n.ident(self.ids.message_id) for n in sources if n.has(self.ids.message_id)), None)
        if message_id is None:
            message_id = rec.ident("id")
        return require_ids(delivery_id, message_id, self.ids, "meta")

    def _classify(self, rec: Node) -> Classification:
        response = rec.optional_child("response")
        code = response.integer("code", 0, 999) if response else None
        enhanced = _enhanced(response.optional_child("enhanced_code")) if response else None
        text = response.text("content", None) if response else None
        category = rec.text("bounce_classification", 128)
        hint = f"kumomta:{category}" if category and category != _UNCATEGORIZED else None
        return self.classify(code, enhanced, text, hint)


def _enhanced(node: Node | None) -> str | None:
    """KumoMTA splits the enhanced status code into {class, subject, detail}; rejoin it as "5.1.1"."""
    if node is None:
        return None
    parts = [node.integer(key, 0, 999) for key in ("class", "subject", "detail")]
    return ".".join(str(p) for p in parts) if None not in parts else None


def _supplemental_trace(rec: Node) -> Node | None:
    report = rec.optional_child("feedback_report")
    return report.optional_child("supplemental_trace") if report else None


def _feedback_type(rec: Node) -> str | None:
    report = rec.optional_child("feedback_report")
    value = report.text("feedback_type", 64) if report else None
    return value.casefold() if value else None
