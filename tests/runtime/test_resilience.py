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
