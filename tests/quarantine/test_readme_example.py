"""The README's quarantine worked example, run as shown (its commands, samples/quarantine/) on the session's Apache
Kafka, with topics of its own: every address ends as the README's table says, then release and forget."""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import fields
from pathlib import Path

from consumer.kafka.topics import Topics
from tests.cli.tools import outcome, sendtrack
from tests.runtime.harness import free_port, stop, wait_http

README = Path(__file__).parents[2] / "README.md"
SAMPLES = Path(__file__).parents[2] / "samples" / "quarantine"


def readme_table() -> dict[str, tuple[str, str, str]]:
    """address -> (status, rule, since) from the table between the README's quarantine-example markers."""
    text = README.read_text()
    table = text[text.index("<!-- quarantine-example -->") : text.index("<!-- /quarantine-example -->")]
    rows = [line.strip("|").split("|") for line in table.splitlines() if re.match(r"\| \S+@", line)]
    return {cells[0].strip(): (cells[1].strip(), cells[2].strip(), cells[3].strip()) for cells in rows}


def statuses(kafka: list[str], topics: list[str]) -> dict[str, tuple[str, str, str]]:
    code, stdout, stderr = outcome(sendtrack("quarantine", "show", *kafka, *topics, "--all", "--json"))
    assert code == 0, stderr
    records = [json.loads(line) for line in stdout.splitlines()]
    return {r["address"]: (r["status"], r["rule"], _iso(r["since"])) for r in records}


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def test_the_readme_quarantine_example(kafka, tmp_path: Path) -> None:
    expected = readme_table()
    assert len(expected) == 5
    prefixed = Topics.prefixed(f"readme-{uuid.uuid4().hex[:8]}.")
    topic_flags = [f"--topic-{f.name.replace('_', '-')}={getattr(prefixed, f.name)}" for f in fields(Topics)]
    quarantine_topics = [arg for arg in topic_flags if arg.startswith("--topic-address-")]
    bootstrap = ["--bootstrap-servers", kafka.bootstrap_servers]
    port = free_port()
    state = ["--state-dir", str(tmp_path / "state"), "--http-port", str(port), "--group-id", prefixed.deliveries]
    run = ["--create-topics", "--quarantine", "--address-idle-after", "3650d"]
    service = sendtrack("run", *bootstrap, *run, *state, *topic_flags)
    try:
        wait_http(port, "/readyz", timeout_s=90)
        samples = ((prefixed.deliveries, "deliveries", "delivery_event"), (prefixed.mta_events, "mta", "mta_event"))
        for topic, sample, schema in samples:
            path = str(SAMPLES / f"january-news.{sample}.jsonl")
            code, _, stderr = outcome(sendtrack("produce", *bootstrap, "--topic", topic, "--schema", schema, path))
            assert code == 0, stderr
        deadline, seen = time.monotonic() + 90, {}
        while time.monotonic() < deadline and seen != expected:
            time.sleep(1)
            seen = statuses(bootstrap, quarantine_topics)
        assert seen == expected

        release = ["ana@example.com", "--actor", "ops.alice", "--wait", "30"]
        code, _, stderr = outcome(sendtrack("quarantine", "release", *bootstrap, *quarantine_topics, *release))
        assert code == 0, stderr
        assert "ana@example.com" not in stderr  # the audit line names it by address_ref only
        assert statuses(bootstrap, quarantine_topics)["ana@example.com"][:2] == ("VALID", "MANUAL_RELEASE")

        forget = ["Cleo@Example.com", "--actor", "dpo.bob", "--wait", "30"]
        code, _, stderr = outcome(sendtrack("quarantine", "forget", *bootstrap, *quarantine_topics, *forget))
        assert code == 0, stderr
        code, _, _ = outcome(sendtrack("quarantine", "show", *bootstrap, *quarantine_topics, "cleo@example.com"))
        assert code == 1  # unknown address
    finally:
        assert stop(service) == 0
