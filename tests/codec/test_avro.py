from __future__ import annotations

import pytest
from fastavro.validation import validate
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.codec.avro import HEADER_SIZE, AvroCodec
from consumer.codec.errors import DecodeError, UnknownSchema
from consumer.codec.schemas import DELIVERY_EVENT, DELIVERY_KPI, MTA_EVENT, SENDING_LOG, build_schema, load, previous
from tests import samples
from tests.core.builders import delivery_event, kpi_after, mta, prepared


@pytest.fixture(scope="module")
def mta_codec() -> AvroCodec:
    return AvroCodec.named(MTA_EVENT)


def test_roundtrip_keeps_timestamps_as_epoch_millis(mta_codec):
    event = mta("d", "m", "SOFT_BOUNCE", at=1_767_225_600_123, reason="mailbox_full", attempt=2)
    data = mta_codec.encode(event)
    assert data[:2] == b"\xc3\x01"
    assert mta_codec.decode(data) == event


def test_every_schema_encodes_what_the_core_produces():
    kpi = kpi_after([prepared("d", efs=True), mta("d", "m", "HARD_BOUNCE", reason="user_unknown")])
    assert AvroCodec.named(DELIVERY_KPI).decode(AvroCodec.named(DELIVERY_KPI).encode(kpi)) == kpi
    delivery = prepared("d", efs=None)
    codec = AvroCodec.named(DELIVERY_EVENT)
    assert codec.decode(codec.encode(delivery)) == delivery
    log = {
        "log_id": "d/m/1",
        "delivery_id": "d",
        "message_id": "m",
        "old_status": None,
        "new_status": "FAILED",
        "reason": "x",
        "event_id": None,
        "occurred_at": 5,
    }
    codec = AvroCodec.named(SENDING_LOG)
    assert codec.decode(codec.encode(log)) == log


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (None, "not an Avro single-object"),
        (b"", "not an Avro single-object"),
        (b'{"json": "not avro"}', "not an Avro single-object"),
        (b"\xc3\x01" + b"\x00" * 8 + b"abc", "unknown mta_event writer fingerprint"),
    ],
)
def test_foreign_bytes_are_typed_errors(mta_codec, data, detail):
    with pytest.raises(DecodeError, match=detail) as caught:
        mta_codec.decode(data)
    assert caught.value.field == "value"


def test_unknown_fingerprint_is_its_own_error(mta_codec):
    with pytest.raises(UnknownSchema):
        mta_codec.decode(b"\xc3\x01" + b"\x01" * 8 + b"abc")


def test_corrupt_body_truncation_and_unknown_enum_index(mta_codec):
    good = mta_codec.encode(mta("d", "m", "DELIVERED", event_id="e"))
    header = good[:10]
    with pytest.raises(DecodeError, match="corrupt mta_event"):
        mta_codec.decode(good[:-4])
    with pytest.raises(DecodeError, match="trailing bytes"):
        mta_codec.decode(good + b"\x00")
    enum_at = header + b"\x02e" + b"\x02d" + b"\x02m"  # then the enum index: 40 is out of range
    with pytest.raises(DecodeError, match="enum index 40"):
        mta_codec.decode(enum_at + b"\x50" + good[len(enum_at) + 1 :])


@pytest.mark.parametrize("zigzag", [b"\x01", b"\x03", b"\x11"])  # -1, -2, -9: fastavro would index from the end
def test_a_negative_enum_index_is_corrupt_not_the_last_symbol(mta_codec, zigzag):
    good = mta_codec.encode(mta("d", "m", "RELAYED", event_id="e"))
    enum_at = len(good[:10] + b"\x02e" + b"\x02d" + b"\x02m")
    with pytest.raises(DecodeError, match="enum index -") as caught:
        mta_codec.decode(good[:enum_at] + zigzag + good[enum_at + 1 :])
    assert caught.value.field == "type"


def test_a_negative_enum_index_cannot_cancel_a_delivery():
    codec = AvroCodec.named(DELIVERY_EVENT)
    good = codec.encode(delivery_event("d", "PREPARED", event_id="e"))
    enum_at = len(good[:10] + b"\x02e" + b"\x02d")
    with pytest.raises(DecodeError, match="enum index -1"):
        codec.decode(good[:enum_at] + b"\x01" + good[enum_at + 1 :])


def test_an_older_writer_is_range_checked_too(mta_codec):
    older = dict(load(MTA_EVENT).definition)
    older["fields"] = [f for f in older["fields"] if f["name"] != "address"]
    old_writer = AvroCodec(build_schema(MTA_EVENT, older))
    good = old_writer.encode({k: v for k, v in mta("d", "m", "RELAYED", event_id="e").items() if k != "address"})
    mta_codec.register_writer(older)
    enum_at = len(good[:10] + b"\x02e" + b"\x02d" + b"\x02m")
    with pytest.raises(DecodeError, match="enum index -1"):
        mta_codec.decode(good[:enum_at] + b"\x01" + good[enum_at + 1 :])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_whatever_a_mutated_record_decodes_to_satisfies_the_schema(mta_codec, data):
    good = mta_codec.encode(mta("d", "m", "SOFT_BOUNCE", reason="mailbox_full", event_id="e"))
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(HEADER_SIZE, len(mutated) - 1))
        mutated[at] = data.draw(st.integers(0, 255))
    try:
        record = mta_codec.decode(bytes(mutated))
    except DecodeError:
        return
    validate(record, load(MTA_EVENT).plain, raise_errors=True)


def test_reads_records_of_an_older_writer_schema(mta_codec):
    older = dict(load(MTA_EVENT).definition)
    older["fields"] = [f for f in older["fields"] if f["name"] not in ("url", "address", "attempt")]
    old_writer = AvroCodec(build_schema(MTA_EVENT, older))
    data = old_writer.encode({k: v for k, v in mta("d", "m", "OPEN").items() if k not in ("url", "address", "attempt")})
    mta_codec.register_writer(older)
    decoded = mta_codec.decode(data)
    assert (decoded["attempt"], decoded["url"], decoded["type"]) == (0, None, "OPEN")


def test_a_kpi_written_before_the_archived_field_still_decodes() -> None:
    [older] = previous(DELIVERY_KPI)
    record = {**samples.EXPECTED_KPI, "version": 3, "updated_at": 5}
    del record["archived"]
    written = AvroCodec(build_schema(DELIVERY_KPI, older)).encode(record)
    assert AvroCodec.named(DELIVERY_KPI).decode(written) == {**record, "archived": False}
