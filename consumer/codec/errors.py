"""Typed input errors: each names the field at fault, so a dead-letter record explains itself."""

from __future__ import annotations


class InvalidEvent(Exception):
    """Input that cannot be applied. `code` is a short, bounded label (for metrics and DLQ headers)."""

    code = "invalid"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class DecodeError(InvalidEvent):
    """The bytes are not a record of the expected schema."""

    code = "decode_error"


class UnknownSchema(DecodeError):
    """Framed Avro, but written with a schema this version does not know."""

    code = "unknown_schema"


class FieldError(InvalidEvent):
    """Decoded, but a field's value breaks the contract (empty id, negative count, absurd size, ...)."""

    code = "invalid_field"


class KeyMismatch(InvalidEvent):
    """The record key is not the event's delivery_id, so partitioning would be wrong."""

    code = "key_mismatch"


class MissingKey(KeyMismatch):
    """The record has no key: the contract keys every input by delivery_id."""

    code = "missing_key"


class FutureEvent(FieldError):
    """occurred_at is further ahead of the wall clock than the allowed skew: it must not move time."""

    code = "clock_skew"


class DeliveryArchived(InvalidEvent):
    """Valid input for a delivery already archived (past its retention): kept in the dead-letter topic for a replay
    after a longer retention, never applied, so the archived KPI stays final."""

    code = "delivery_archived"


class ProcessingError(InvalidEvent):
    """A well-formed record whose processing raised: set aside so the rest of the stream goes on."""

    code = "processing_error"
