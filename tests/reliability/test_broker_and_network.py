"""Network and broker faults under load: connection cuts and stalls, a broker paused beyond every client
timeout, a broker unreachable and back. After each: exact results, and the instance was never silently
stuck: it said not-ready while it could not work, and either carried on or exited non-zero (restarted
here, as an orchestrator would)."""

from __future__ import annotations

import signal
import time

import pytest

from consumer.cli.workload import Workload, WorkloadSpec, generate
from consumer.runtime.errors import STUCK
from tests.figures import record
from tests.reliability.faults import ReadinessWatch, exact_or_exit, log_lines, until_exact
from tests.runtime.harness import Pipeline, free_port, stop, wait_http


def chunks(workload: Workload, parts: int) -> list[Workload]:
    events = workload.mta_events
    size = -(-len(events) // parts)
    rest = [Workload([], events[i : i + size]) for i in range(size, len(events), size)]
    return [Workload(workload.delivery_events, events[:size]), *rest]


def started(pipeline: Pipeline, instance: str, **options):
    port = free_port()
    process = pipeline.start(instance, http_port=port, **options)
    wait_http(port, "/readyz", timeout_s=90)
    return process, port


def exact_in_the_end(pipeline: Pipeline, workload: Workload, process, instance: str, **options):
    """Wait for exact results. An instance may instead end itself non-zero (seen: STUCK, when librdkafka
    hangs in a transactional call after the outage); it is then restarted, as an orchestrator would."""
    code = exact_or_exit(pipeline, workload, process, timeout_s=180)
    if code is not None:
        assert code == STUCK, f"exit code {code}"
        process, _port = started(pipeline, instance, **options)
    until_exact(pipeline, workload, process)
    return process, code


def test_connection_cuts_and_stalls_during_processing_change_nothing(proxied, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=8, messages=1_500, ended=2, seed=21))
    pipeline = Pipeline(proxied.bootstrap_servers, tmp_path, partitions=4)
    process, _port = started(pipeline, "net", watchdog_timeout_s=45)
    faults = 0
    try:
        for part in chunks(workload, 4):
            pipeline.produce_workload(part)
            time.sleep(1.0)
            faults += 1
            proxied.proxy.cut()
            time.sleep(1.5)
        proxied.proxy.stall()  # shorter than the client timeouts: waited out in place
        faults += 1
        time.sleep(8)
        proxied.proxy.unstall()
        stalled_at = time.monotonic()
        # librdkafka may hang in a transactional call after such faults (seen: commit_transaction past its
        # timeout). Then the watchdog ends the instance with STUCK (4) and a restart must be exact.
        process, code = exact_in_the_end(pipeline, workload, process, "net", watchdog_timeout_s=45)
        record("network_cut_and_stall", injected=faults, exact=1, exited=code, recover_s=_since(stalled_at))
        assert stop(process) == 0
    finally:
        process.kill()


def survive_an_outage(proxied, tmp_path, instance: str, seed: int, begin, end, seconds: float):
    """Half the send, an outage (begin() ... end()), the other half: readiness must have dropped, and the
    results must end exact. Returns the pipeline, the exit code if the instance ended itself, and the
    seconds from the end of the outage to exact results."""
    workload = generate(WorkloadSpec.ending_now(deliveries=6, messages=1_500, ended=2, seed=seed))
    pipeline = Pipeline(proxied.bootstrap_servers, tmp_path, partitions=4)
    process, port = started(pipeline, instance)
    try:
        with ReadinessWatch(port) as watch:
            first, second = chunks(workload, 2)
            pipeline.produce_workload(first)
            time.sleep(2)
            began = time.monotonic()
            begin()
            time.sleep(seconds)
            end()
            ended = time.monotonic()
            assert watch.said_not_ready_after(began), "readiness stayed 200 through the outage"
            pipeline.produce_workload(second)
            process, code = exact_in_the_end(pipeline, workload, process, instance)
        recovered = _since(ended)
        assert stop(process) == 0
        return pipeline, code, recovered
    finally:
        process.kill()


@pytest.mark.long
def test_a_broker_paused_beyond_every_client_timeout_is_reported_and_survived(proxied, tmp_path):
    # 65 s: past message.timeout (30 s), transaction.timeout (60 s) and the session (6 s).
    try:
        pipeline, code, recovered = survive_an_outage(
            proxied, tmp_path, "paused", 22, proxied.broker.pause, proxied.broker.resume, 65
        )
    finally:
        proxied.broker.resume()
    events = {line["event"] for line in log_lines(pipeline, "paused")}
    assert events & {"checkpoint_failed", "kafka_error", "abort_failed", "consume_error", "partitions_lost"}, events
    record("broker_paused", injected=1, exact=1, exited=code, recover_s=recovered)


def test_sigterm_ends_the_instance_within_the_grace_period_while_the_broker_is_paused(proxied, tmp_path):
    workload = generate(WorkloadSpec.ending_now(deliveries=4, messages=1_000, seed=23))
    pipeline = Pipeline(proxied.bootstrap_servers, tmp_path, partitions=2)
    process, _port = started(pipeline, "term", grace_period_s=8)
    try:
        pipeline.produce_workload(workload)
        time.sleep(1.5)
        proxied.broker.pause()
        time.sleep(3)  # the main thread is now blocked in some Kafka call
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
        took = time.monotonic() - asked
        assert took < 8 + 3, f"took {took:.1f} s"
        assert code in (0, 3), code  # a clean stop, or GRACE_EXCEEDED: never a hang
        proxied.broker.resume()
        process, _port = started(pipeline, "term")
        process, _ = exact_in_the_end(pipeline, workload, process, "term")
        record("sigterm_broker_paused", injected=1, exact=1, exit_code=code, stop_s=round(took, 1))
        assert stop(process) == 0
    finally:
        proxied.broker.resume()
        process.kill()


def test_a_broker_unreachable_for_a_while_is_waited_out(proxied, tmp_path):
    def cut_off() -> None:
        proxied.proxy.refuse(40)
        proxied.proxy.cut()

    _, code, recovered = survive_an_outage(proxied, tmp_path, "gone", 24, cut_off, lambda: None, 41)
    record("broker_unreachable", injected=1, exact=1, exited=code, recover_s=recovered)


def _since(moment: float) -> float:
    return round(time.monotonic() - moment, 1)
