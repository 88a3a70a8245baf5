"""Exactness through crashes, rebalances and shutdowns: real processes, kill -9, SIGTERM, scale-out."""

from __future__ import annotations

import random
import signal
import time
from typing import Any

import pytest

from consumer.cli.workload import Workload, WorkloadSpec, generate
from tests.figures import record
from tests.runtime.exactness import assert_exact, log_events
from tests.runtime.harness import Pipeline, stop


def run_to_the_end(pipeline: Pipeline, workload: Workload, instance: str, timeout_s: float, **options: Any) -> None:
    """Start an instance, let it finish the workload, check the outputs are exact, and stop it cleanly."""
    service = pipeline.start(instance, **options)
    try:
        pipeline.wait_for_kpis(workload.expected, timeout_s=timeout_s, processes=[service])
        assert_exact(pipeline, workload)
        assert stop(service) == 0
    finally:
        service.kill()


@pytest.mark.parametrize(
    ("store", "guarantee", "messages", "kills"),
    [("rocksdb", "exactly-once", 5_000, 4), ("memory", "at-least-once", 2_000, 3)],
)
def test_kill_minus_nine_at_random_moments_changes_nothing(kafka, tmp_path, store, guarantee, messages, kills):
    workload = generate(WorkloadSpec.ending_now(deliveries=16, messages=messages, ended=4, seed=3))
    assert workload.size > 40 * messages
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    rnd = random.Random(42)
    for attempt in range(kills):
        service = pipeline.start("crashy", store=store, guarantee=guarantee)
        time.sleep(rnd.uniform(4.0, 9.0))  # join, restore, then die somewhere in the middle of the work
        assert service.poll() is None, f"attempt {attempt}: exited early with {service.returncode}"
        service.send_signal(signal.SIGKILL)
        service.wait()
    started = time.monotonic()
    run_to_the_end(pipeline, workload, "crashy", timeout_s=240, store=store, guarantee=guarantee)
    record("kill_9", injected=kills, exact=1, recover_s=round(time.monotonic() - started, 1), store=store)


def test_scale_out_and_in_keeps_the_results_exact(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=12, messages=2_000, ended=3, seed=5))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=6)
    third = len(workload.mta_events) // 3
    pipeline.produce_workload(Workload(workload.delivery_events, workload.mta_events[:third]))
    first, second = pipeline.start("a"), pipeline.start("b")
    processes: list[Any] = [first, second]
    try:
        time.sleep(8)
        pipeline.produce_workload(Workload([], workload.mta_events[third : 2 * third]))
        processes.append(pipeline.start("c"))  # three instances share six partitions
        time.sleep(10)
        assert stop(second) == 0  # its partitions move, and are restored from the changelog elsewhere
        processes.remove(second)
        pipeline.produce_workload(Workload([], workload.mta_events[2 * third :]))
        pipeline.wait_for_kpis(workload.expected, timeout_s=180, processes=processes)
        assert_exact(pipeline, workload)
        restores = [e for name in ("a", "c") for e in log_events(tmp_path / f"{name}.log") if e["event"] == "restored"]
        assert any(e["records"] > 0 for e in restores), "no partition was restored from the changelog"
        for process in processes:
            assert stop(process) == 0
    finally:
        for process in (first, second, *processes):
            process.kill()


def test_sigterm_mid_stream_exits_cleanly_and_loses_nothing(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=8, messages=4_000, seed=9))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    service = pipeline.start("polite", store="memory")
    time.sleep(6)
    started = time.monotonic()
    assert stop(service, timeout_s=25) == 0
    assert time.monotonic() - started < 20  # the configured grace period
    assert '"event": "stopped"' in (tmp_path / "polite.log").read_text()
    run_to_the_end(pipeline, workload, "polite", timeout_s=120, store="memory")


def test_archiving_is_exact_through_kill_minus_nine(kafka, tmp_path):
    """Sends end, are archived after a short retention, and instances die by kill -9 before and after: every KPI
    ends exact, the ended sends archived with their final figures, no event refused, and the changelog's latest
    word on every message of an archived send a tombstone (what compaction keeps: nothing)."""
    retention_s = 15.0
    workload = generate(WorkloadSpec.ending_now(deliveries=8, messages=1_000, ended=4, seed=17))
    ended = {d for d, kpi in workload.expected.items() if kpi["final"]}
    final = Workload(workload.delivery_events, workload.mta_events)
    final.expected = {d: {**kpi, "archived": d in ended} for d, kpi in workload.expected.items()}
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    rnd = random.Random(7)
    options = {"store": "rocksdb", "state_retention_s": retention_s}
    for _ in range(2):  # before the archive: while the backlog is read
        service = pipeline.start("archiving", **options)
        time.sleep(rnd.uniform(4.0, 7.0))
        service.send_signal(signal.SIGKILL)
        service.wait()
    service = pipeline.start("archiving", **options)
    try:
        pipeline.wait_for_kpis(final.expected, timeout_s=120, processes=[service])
        time.sleep(rnd.uniform(0.0, 2.0))
    finally:
        service.send_signal(signal.SIGKILL)  # after the archive
        service.wait()
    run_to_the_end(pipeline, final, "archiving", timeout_s=120, **options)
    assert pipeline.read_all(pipeline.topics.dlq) == []
    latest: dict[bytes, bytes | None] = {}
    for *_, key, value, _ in pipeline.read_all(pipeline.topics.changelog):
        latest[key] = value
    left = [key for key, value in latest.items() if value is not None and key[2:].split(b"\x00")[0].decode() in ended]
    assert all(key.startswith(b"a\x00") for key in left), left[:5]  # each archived send: its one archived record
    assert len(left) == len(ended)
