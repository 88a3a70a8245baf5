"""`sendtrack run --workers N`: one parent, N member processes of the group, one HTTP endpoint; real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from consumer.cli.workload import WorkloadSpec, generate
from consumer.ops import logging as logs
from consumer.runtime.errors import GRACE_EXCEEDED, KAFKA_FATAL, STATE_FAILED
from consumer.runtime.settings import Settings
from consumer.runtime.workers import Supervisor, worker_settings
from tests.runtime.exactness import assert_exact, log_events
from tests.runtime.harness import Pipeline, as_json, free_port, http_get, stop, wait_http


def samples(port: int, name: str) -> list:
    """Every sample called `name` in the parent's /metrics."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    families = text_string_to_metric_families(body.decode())
    return [sample for family in families for sample in family.samples if sample.name == name]


def worker_pids(log: Path) -> dict[str, int]:
    """The latest process of each worker, from the parent's `worker_started` lines."""
    return {e["worker"]: e["pid"] for e in log_events(log) if e.get("event") == "worker_started"}


def wait_until(check, timeout_s: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.3)


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_worker_gets_its_own_id_state_and_loopback_port_in_the_same_group(tmp_path):
    parent = Settings(bootstrap_servers="k", instance_id="box", state_dir=tmp_path, http_port=8080, workers=4)
    worker = worker_settings(parent, 3, tmp_path / "w3.port")
    assert (worker.instance_id, worker.state_dir, worker.group_id) == ("box-w3", tmp_path / "w3", parent.group_id)
    assert (worker.http_host, worker.http_port, worker.workers, worker.worker_of) == ("127.0.0.1", 0, 1, os.getpid())


# A stand-in worker: exits with the next code of its plan (`<dir>/<instance>.plan`, one per start), or, past
# the plan, runs until SIGTERM and exits 0 ("deaf" in the plan: ignores SIGTERM).
FAKE_WORKER = """
import pathlib, signal, sys, time
folder, name = pathlib.Path(sys.argv[1]), sys.argv[2]
runs = folder / (name + ".runs")
run = int(runs.read_text()) if runs.exists() else 0
runs.write_text(str(run + 1))
plan_file = folder / (name + ".plan")
plan = plan_file.read_text().split() if plan_file.exists() else []
if run < len(plan) and plan[run] != "deaf":
    sys.exit(int(plan[run]))
deaf = run < len(plan)  # a worker whose stop never ends
signal.signal(signal.SIGTERM, signal.SIG_IGN if deaf else lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def fake_supervisor(tmp_path: Path, plans: dict[str, str], **options: Any) -> Supervisor:
    for name, plan in plans.items():
        (tmp_path / f"box-{name}.plan").write_text(plan)
    options = {"http_port": None, **options}
    settings = Settings(bootstrap_servers="k", instance_id="box", state_dir=tmp_path, workers=2, **options)
    command = lambda worker: [sys.executable, "-c", FAKE_WORKER, str(tmp_path), worker.instance_id]  # noqa: E731
    return Supervisor(settings, command, logs.get("test"))


def signal_later(supervisor: Supervisor, seconds: float, times: int = 1) -> None:
    """What SIGTERM does to the parent, without signalling the test's own process."""
    for _ in range(times):
        threading.Timer(seconds, supervisor._on_signal, (signal.SIGTERM, None)).start()


def test_a_crashing_worker_is_restarted_with_a_backoff_and_counted_then_all_stop_cleanly(tmp_path):
    supervisor = fake_supervisor(tmp_path, {"w0": "1 4"})  # a crash, then stuck, then it runs
    signal_later(supervisor, 6.0)  # past the backoff: 1 s, then 2 s
    asking = threading.Event()

    def scrape() -> None:  # what HTTP threads do meanwhile: they must not swallow a worker's end
        while not asking.wait(0.005):
            supervisor.targets()

    threading.Thread(target=scrape, daemon=True).start()
    try:
        assert supervisor.run() == 0
    finally:
        asking.set()
    assert (tmp_path / "box-w0.runs").read_text() == "3" and (tmp_path / "box-w1.runs").read_text() == "1"
    assert supervisor.registry.get_sample_value("sendtrack_worker_restarts_total", {"worker": "w0"}) == 2


def test_a_fatal_exit_ends_every_worker_and_the_parent_with_its_code_without_a_restart(tmp_path):
    supervisor = fake_supervisor(tmp_path, {"w1": "5"})
    assert supervisor.run() == KAFKA_FATAL
    assert (tmp_path / "box-w1.runs").read_text() == "1"
    assert [w.process.returncode for w in supervisor.workers] == [0, KAFKA_FATAL]  # w0 stopped by SIGTERM


def test_a_second_signal_ends_the_parent_with_3(tmp_path):
    supervisor = fake_supervisor(tmp_path, {})
    signal_later(supervisor, 1.0, times=2)
    assert supervisor.run() == GRACE_EXCEEDED


def test_workers_still_stopping_after_the_grace_period_are_killed_and_the_parent_exits_3(tmp_path):
    supervisor = fake_supervisor(tmp_path, {"w1": "deaf"}, grace_period_s=0.5)
    signal_later(supervisor, 1.0)
    started = time.monotonic()
    assert supervisor.run() == GRACE_EXCEEDED
    assert 5.5 <= time.monotonic() - started < 10  # the grace period and the margin for the worker to say so
    assert [w.process.returncode for w in supervisor.workers] == [0, -signal.SIGKILL]


def test_the_parent_writes_its_own_port_and_is_not_ready_while_a_worker_has_no_server(tmp_path):
    supervisor = fake_supervisor(tmp_path, {}, http_port=0, http_host="127.0.0.1", http_port_file=tmp_path / "port")
    answers = []

    def ask_then_stop() -> None:
        answers.append(http_get(int((tmp_path / "port").read_text()), "/readyz"))
        supervisor._on_signal(signal.SIGTERM, None)

    threading.Timer(1.5, ask_then_stop).start()
    assert supervisor.run() == 0
    ((status, body),) = answers
    assert status == 503 and as_json(body)["detail"] == "w0: starting; w1: starting"  # stand-ins serve nothing


def test_two_workers_are_exact_and_serve_one_endpoint_that_sums_up_and_stops_on_sigterm(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=8, messages=1_000, ended=2, seed=21))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    port = free_port()
    parent = pipeline.start("box", http_port=port, workers=2)
    try:
        status, body = http_get_when_up(port, "/readyz")
        assert status == 503 and "w" in as_json(body)["detail"]  # the workers are still joining: not ready
        detail = as_json(wait_http(port, "/readyz", 200))["detail"]
        assert "w0: delivery:" in detail and "w1: delivery:" in detail
        owned = samples(port, "sendtrack_assigned_partitions")
        assert {s.labels["worker"] for s in owned} == {"w0", "w1"} and sum(s.value for s in owned) == 4

        pipeline.produce_workload(workload)
        pipeline.wait_for_kpis(workload.expected, timeout_s=120, processes=[parent])
        assert_exact(pipeline, workload)
        counted = lambda: sum(s.value for s in samples(port, "sendtrack_events_total"))  # noqa: E731
        wait_until(lambda: counted() == workload.size, 20, "summed event count")

        pids = worker_pids(tmp_path / "box.log")
        os.kill(pids["w1"], signal.SIGSTOP)  # a worker that does not answer makes the whole machine unready
        try:
            status, body = http_get(port, "/readyz")
            assert status == 503 and as_json(body)["detail"].startswith("w1: not answering")
        finally:
            os.kill(pids["w1"], signal.SIGCONT)
        wait_http(port, "/readyz", 200)

        assert stop(parent) == 0
        assert not any(alive(pid) for pid in pids.values())
        stopped = [e for e in log_events(tmp_path / "box.log") if e.get("event") == "worker_stopped"]
        assert sorted((e["worker"], e["exit_code"]) for e in stopped) == [("w0", 0), ("w1", 0)]
    finally:
        parent.kill()


def test_a_worker_killed_by_sigkill_is_restarted_and_the_results_stay_exact(kafka, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=12, messages=3_000, ended=3, seed=22))
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    pipeline.produce_workload(workload)
    port = free_port()
    parent = pipeline.start("box", http_port=port, workers=2)
    try:
        wait_until(lambda: len(worker_pids(tmp_path / "box.log")) == 2, what="workers")
        time.sleep(6)  # joined and in the middle of the backlog
        killed = worker_pids(tmp_path / "box.log")["w0"]
        os.kill(killed, signal.SIGKILL)
        restarted = lambda: http_get(port, "/readyz") and worker_pids(tmp_path / "box.log")["w0"] != killed  # noqa: E731
        wait_until(restarted, 30, "restart while the parent is asked for readiness")
        pipeline.wait_for_kpis(workload.expected, timeout_s=180, processes=[parent])
        assert_exact(pipeline, workload)
        crashes = [e for e in log_events(tmp_path / "box.log") if e.get("event") == "worker_crashed"]
        assert [(e["worker"], e["how"]) for e in crashes] == [("w0", "killed by SIGKILL")]
        restarts = samples(port, "sendtrack_worker_restarts_total")
        assert [(s.labels["worker"], s.value) for s in restarts] == [("w0", 1.0)]
        assert stop(parent) == 0
    finally:
        parent.kill()


def test_a_worker_whose_state_store_fails_ends_the_parent_with_its_code(kafka, tmp_path):
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    (tmp_path / "state-box").mkdir()
    (tmp_path / "state-box" / "w1").write_text("a file where w1's state directory should be")
    parent = pipeline.start("box", workers=2)
    try:
        assert parent.wait(60) == STATE_FAILED  # not a restart loop: a restart would fail the same way
    except subprocess.TimeoutExpired:
        parent.kill()
        raise
    events = log_events(tmp_path / "box.log")
    failed = [e for e in events if e.get("event") == "worker_failed"]
    assert [(e["worker"], e["exit_code"]) for e in failed] == [("w1", STATE_FAILED)]
    assert not any(alive(pid) for pid in worker_pids(tmp_path / "box.log").values())


def test_workers_stop_cleanly_when_their_parent_is_killed(kafka, tmp_path):
    pipeline = Pipeline(kafka.bootstrap_servers, tmp_path, partitions=4)
    port = free_port()
    parent = pipeline.start("box", http_port=port, workers=2)
    try:
        wait_http(port, "/readyz", 200)
        pids = worker_pids(tmp_path / "box.log")
        parent.send_signal(signal.SIGKILL)  # no forwarding: each worker sees itself orphaned
        parent.wait()
        wait_until(lambda: not any(alive(pid) for pid in pids.values()), 30, "worker exit")
        gone = [e for e in log_events(tmp_path / "box.log") if e.get("event") == "parent_gone"]
        assert sorted(e["instance_id"] for e in gone) == ["box-w0", "box-w1"]
        assert sum(e.get("event") == "stopped" for e in log_events(tmp_path / "box.log")) == 2  # both cleanly
    finally:
        parent.kill()


def http_get_when_up(port: int, path: str, timeout_s: float = 30.0) -> tuple[int, bytes]:
    """The first answer of a server that is starting."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return http_get(port, path)
        except OSError:
            assert time.monotonic() < deadline, "the parent never served HTTP"
            time.sleep(0.1)
