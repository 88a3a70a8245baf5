"""Source formats -> `mta.events` contract events. The Kafka stage calls `make_format(name, ids)` once and then
`format.map(record_value)` per record: a list of events to produce (keyed by delivery_id), or an
UnmappableRecord (an InvalidEvent naming the field) to dead-letter. `map` raises nothing else, for any bytes."""

from __future__ import annotations

from consumer.ingest.classifier import Classifier, default_classifier
from consumer.ingest.formats.common import Format, IdKeys, JsonFormat, Mapped, MapperBug, UnmappableRecord
from consumer.ingest.formats.kumomta import KumoMta
from consumer.ingest.formats.sendgrid import SendGrid
from consumer.ingest.formats.ses import Ses

__all__ = ["DEFAULT_IDS", "FORMATS", "Format", "IdKeys", "Mapped", "MapperBug", "UnmappableRecord", "make_format"]

_REGISTRY: dict[str, type[JsonFormat]] = {cls.name: cls for cls in (KumoMta, Ses, SendGrid)}
FORMATS: tuple[str, ...] = tuple(_REGISTRY)
DEFAULT_IDS = IdKeys()  # the keys "delivery_id" and "message_id"


def make_format(name: str, ids: IdKeys = DEFAULT_IDS, classifier: Classifier | None = None) -> Format:
    """The mapper for one source format; the packaged classifier rules unless `classifier` is given."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown format {name!r}; expected one of {', '.join(FORMATS)}")
    return _REGISTRY[name](ids, classifier or default_classifier())
