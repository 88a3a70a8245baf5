"""Process and disk faults under load: kill -9 at random moments, SIGTERM during a restore and during
checkpoints, a rebalance storm, and a state directory that fills up. Exact after each."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from consumer.cli.workload import Workload, WorkloadSpec, generate
from consumer.runtime.errors import STATE_FAILED
from tests.figures import record
from tests.reliability.faults import log_lines, until_exact
from tests.runtime.harness import Pipeline, free_port, http_get, stop, wait_http


@pytest.mark.long
@pytest.mark.parametrize("kills", [20])
def test_kill_minus_nine_at_random_moments_many_times(kafka, tmp_path, kills):
    """The long version of tests/runtime/test_resilience.py's kill -9 test (that one runs in CI)."""
    workload = generate(WorkloadSpec.ending_now(deliveries=16, messages=12_000, ended=4, seed=31))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    rnd = random.Random(7)
    for attempt in range(kills):
        process = pipeline.start("crashy")
        time.sleep(rnd.uniform(4.0, 9.0))
        assert process.poll() is None, f"attempt {attempt}: exited early with {process.returncode}"
        process.send_signal(signal.SIGKILL)
        process.wait()
    process = pipeline.start("crashy")
    try:
        recovered = until_exact(pipeline, workload, process, timeout_s=300)
        record("kill_9", injected=kills, exact=1, recover_s=round(recovered, 1), events=workload.size)
        assert stop(process) == 0
    finally:
        process.kill()


def test_sigterm_during_a_restore_ends_cleanly(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=12, messages=4_000, ended=3, seed=32))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    first = pipeline.start("polite", store="memory")
    until_exact(pipeline, workload, first, timeout_s=180)  # a full changelog to restore from
    assert stop(first) == 0
    port = free_port()
    process = pipeline.start("polite", store="memory", http_port=port, grace_period_s=10)
    caught_restoring = _wait_for_detail(port, "restoring", process)
    asked = time.monotonic()
    assert stop(process, timeout_s=20) == 0
    stopped_s = round(time.monotonic() - asked, 1)
    process = pipeline.start("polite", store="memory")
    try:
        until_exact(pipeline, workload, process)
        record("sigterm_during_restore", injected=1, exact=1, caught=caught_restoring, stop_s=stopped_s)
        assert stop(process) == 0
    finally:
        process.kill()


def test_sigterm_at_random_moments_under_load_ends_cleanly_and_loses_nothing(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=8, messages=6_000, ended=2, seed=33))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    rnd = random.Random(3)
    stops = 4
    for _ in range(stops):  # some land in a checkpoint: commit interval 0.5 s
        process = pipeline.start("polite", grace_period_s=10)
        time.sleep(rnd.uniform(5.0, 8.0))
        started = time.monotonic()
        assert stop(process, timeout_s=20) == 0
        assert time.monotonic() - started < 10
    process = pipeline.start("polite")
    try:
        until_exact(pipeline, workload, process)
        record("sigterm_under_load", injected=stops, exact=1)
        assert stop(process) == 0
    finally:
        process.kill()


def _wait_for_detail(port: int, word: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):
            status, body = http_get(port, "/readyz")
            if word in body.decode():
                return True
            if status == 200:
                return False
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("seconds", [pytest.param(20, id="short"), pytest.param(60, id="min", marks=pytest.mark.long)])
def test_a_rebalance_storm_leaves_the_results_exact_and_nobody_stuck(kafka, tmp_path, seconds):
    workload = generate(WorkloadSpec.ending_now(deliveries=12, messages=3_000, ended=3, seed=34))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=6)
    third = len(workload.mta_events) // 3
    parts = [Workload(workload.delivery_events, workload.mta_events[:third])]
    parts += [Workload([], workload.mta_events[third : 2 * third]), Workload([], workload.mta_events[2 * third :])]
    pipeline.produce_workload(parts.pop(0))
    running: dict[str, subprocess.Popen[bytes]] = {"a": pipeline.start("a")}
    rnd = random.Random(5)
    counts = {"start": 0, "sigterm": 0, "kill": 0}
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rnd.uniform(2.0, 4.0))
            if parts and rnd.random() < 0.3:
                pipeline.produce_workload(parts.pop(0))
            idle = [name for name in "abc" if name not in running]
            if idle and (len(running) < 2 or rnd.random() < 0.5):
                name = rnd.choice(idle)
                running[name] = pipeline.start(name)
                counts["start"] += 1
                continue
            name = rnd.choice(sorted(running))
            process = running.pop(name)
            if rnd.random() < 0.5:
                assert stop(process, timeout_s=25) == 0, f"{name} did not stop cleanly"
                counts["sigterm"] += 1
            else:
                process.send_signal(signal.SIGKILL)
                process.wait()
                counts["kill"] += 1
            if not running:
                running["a" if name != "a" else "b"] = pipeline.start("a" if name != "a" else "b")
        for part in parts:
            pipeline.produce_workload(part)
        survivor = next(iter(running.values()))
        recovered = until_exact(pipeline, workload, survivor, timeout_s=240)
        record("rebalance_storm", seconds=seconds, exact=1, recover_s=round(recovered, 1), **counts)
        for process in running.values():
            assert stop(process, timeout_s=25) == 0
    finally:
        for process in running.values():
            process.kill()


@pytest.fixture
def small_disk(tmp_path) -> Path:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or 'mount failed'}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_state_disk_stops_the_instance_clearly_and_a_restart_elsewhere_is_exact(kafka, tmp_path, small_disk):
    workload = generate(WorkloadSpec.ending_now(deliveries=12, messages=5_000, ended=3, seed=35))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    process = subprocess.Popen(
        [*pipeline.run_args("disk"), "--state-dir", str(small_disk)],
        stdout=open(tmp_path / "disk.log", "ab"),  # noqa: SIM115 - closed by the process's end
        stderr=subprocess.STDOUT,
    )
    try:
        code = process.wait(180)
    finally:
        process.kill()
    assert code == STATE_FAILED, code
    [failure] = [line for line in log_lines(pipeline, "disk") if line["event"] == "state_store_failed"]
    assert str(small_disk) in failure["error"]
    os.sync()
    process = pipeline.start("disk-2")
    try:
        until_exact(pipeline, workload, process, timeout_s=180)
        record("disk_full", injected=1, exact=1, exit_code=code)
        assert stop(process) == 0
    finally:
        process.kill()


def test_readiness_is_never_200_before_the_restore_is_done(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=2, messages=500, seed=36))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=2)
    pipeline.produce_workload(workload)
    port = free_port()
    process = pipeline.start("r", http_port=port)
    try:
        wait_http(port, "/readyz")
        assert any(line["event"] == "assigned" for line in log_lines(pipeline, "r"))
    finally:
        stop(process)
