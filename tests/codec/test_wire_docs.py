"""docs/topics.md cannot go stale: its fingerprints, its recipes and its worked example are checked against the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_KPI, MTA_EVENT, load, schemas_dir
from consumer.kafka.admin import ADDRESS_SIGNALS, COMPACTED, SIGNALS_RETENTION_MS
from consumer.quarantine import state_codec
from tests import samples

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "topics.md").read_text()
TABLE_ROW = re.compile(r"^\| `(\w+)` \| `([\w.]+)` \| `([0-9a-f]{16})` \| `(-?\d+)` \|$", re.MULTILINE)


def block(after: str, language: str) -> str:
    """The first fenced block of `language` after the text `after`."""
    start = DOC.index(after)
    return re.search(rf"```{language}\n(.*?)```", DOC[start:], re.DOTALL).group(1)


def run(code: str) -> dict[str, Any]:
    """exec a snippet of the doc; its names."""
    names: dict[str, Any] = {}
    exec(compile(code, "docs/topics.md", "exec"), names)
    return names


def current() -> dict[str, tuple[str, str, str]]:
    """(record name, fingerprint hex as framed, Java's signed long) of every schema in schemas/."""
    out = {}
    for path in sorted(schemas_dir().glob("*.avsc")):
        schema = load(path.stem)
        record = f"{schema.definition['namespace']}.{schema.definition['name']}"
        java = int.from_bytes(schema.fingerprint, "little", signed=True)
        out[path.stem] = (record, schema.fingerprint.hex(), str(java))
    return out


def test_the_fingerprint_table_lists_every_schema_with_its_current_fingerprint():
    documented = {name: (record, hex_, java) for name, record, hex_, java in TABLE_ROW.findall(DOC)}
    assert documented == current()


def test_every_fingerprint_mentioned_anywhere_is_a_current_one():
    mentioned = set(re.findall(r"(?<![0-9a-fx])[0-9a-f]{16}(?![0-9a-f])", DOC))  # 0x...: a number, not a frame
    assert mentioned and mentioned <= {hex_ for _, hex_, _ in current().values()}


def test_the_recompute_recipe_prints_the_documented_fingerprints(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the recipe reads schemas/ from the repository root
    run(block("**Recomputing a fingerprint.**", "python"))
    assert capsys.readouterr().out.splitlines() == [f"{name} {hex_}" for name, (_, hex_, _) in current().items()]


def test_the_python_reader_outside_sendtrack_decodes_a_kpi_record(monkeypatch):
    monkeypatch.chdir(ROOT)
    names = run(block("In Python, outside sendtrack:", "python"))
    kpi = {"delivery_id": "d-1", "state": "SENDING", "efs": True, "sent": 9, "failures_by_reason": {"user_unknown": 1}}
    decoded = names["decode_kpi"](AvroCodec.named(DELIVERY_KPI).encode(kpi))
    assert (decoded["delivery_id"], decoded["sent"], decoded["failures_by_reason"]) == ("d-1", 9, {"user_unknown": 1})


def test_the_worked_example_is_what_the_codec_writes_and_its_table_covers_every_byte():
    [event] = [e for e in samples.events(samples.MTA_FILE, MTA_EVENT) if e["event_id"] == "m-21"]
    encoded = AvroCodec.named(MTA_EVENT).encode(event)
    assert bytes.fromhex(block("is this 63-byte value", "text")) == encoded
    assert len(encoded) == 63
    table = DOC[DOC.index("| bytes | field | reads as |") :]
    rows = re.findall(r"^\| `([0-9a-f ]+)` \|", table, re.MULTILINE)
    assert bytes.fromhex("".join(rows)) == encoded
    assert AvroCodec.named(MTA_EVENT).decode(encoded) == event


def test_the_quarantine_topics_are_described_as_created_and_laid_out():
    """Their cleanup and retention as --create-topics sets them, and the changelog's key prefixes."""
    section = DOC[DOC.index("## The address quarantine") : DOC.index("## Compression")]
    days = SIGNALS_RETENTION_MS // 86_400_000
    assert {"cleanup.policy": "delete", "retention.ms": str(days * 86_400_000)} == ADDRESS_SIGNALS
    assert f"| `address.signals` | `delete` | `retention.ms` {days} days" in section
    compacted = f"`segment.bytes` {int(COMPACTED['segment.bytes']) >> 20} MiB, " + ", ".join(
        f"`{name}` {int(COMPACTED[name]) // 3_600_000} h" for name in ("segment.ms", "delete.retention.ms")
    )
    assert COMPACTED["cleanup.policy"] == "compact"
    assert f"| `address.quarantine` | `compact` | {compacted}" in section
    assert "| `sendtrack.quarantine.changelog` | `compact` | as `address.quarantine` |" in section
    documented = re.findall(r"^\| `(\w)(\\0)?[<`]", section, re.MULTILINE)
    layout = [state_codec.ADDRESS, state_codec.DEADLINE, state_codec.STATUS_COUNT, state_codec.CLOCK]
    assert [(prefix + ("\0" if nul else "")).encode() for prefix, nul in documented] == layout
