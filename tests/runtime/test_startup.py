"""What cannot work is said in one line, with its exit code, before the instance joins any group."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from consumer.runtime.errors import CANNOT_START, STATE_FAILED


def run(tmp_path: Path, *flags: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    # An address where nothing listens: every check here must fail before Kafka is asked anything.
    line = [sys.executable, "-m", "consumer.cli.main", "run", "--bootstrap-servers", "127.0.0.1:9", *flags]
    return subprocess.run(line, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def last_event(result: subprocess.CompletedProcess[str]) -> dict:
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    assert "Traceback" not in result.stderr
    return lines[-1]


def test_a_state_directory_that_cannot_be_created_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run(tmp_path, "--state-dir", str(blocker / "state"), "--http-port", "-1")
    assert result.returncode == STATE_FAILED
    event = last_event(result)
    assert event["event"] == "state_store_failed" and str(blocker) in event["error"]


def test_a_state_directory_in_use_by_another_instance_is_refused(tmp_path):
    lock = tmp_path / "state" / "sendtrack" / ".lock"
    lock.parent.mkdir(parents=True)
    hold = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX);"
        " print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = run(tmp_path, "--state-dir", str(tmp_path / "state"), "--http-port", "-1")
        assert time.monotonic() - started < 20
        assert result.returncode == STATE_FAILED
        assert "in use by another sendtrack process" in last_event(result)["error"]
    finally:
        holder.kill()


def test_an_http_port_in_use_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(tmp_path, "--store", "memory", "--http-host", "127.0.0.1", "--http-port", str(port))
    assert result.returncode == CANNOT_START
    event = last_event(result)
    assert event["event"] == "cannot_start" and f"127.0.0.1:{port}" in event["error"]


def test_an_unreachable_broker_at_start_is_one_line_and_exit_2(tmp_path):
    result = run(tmp_path, "--store", "memory", "--http-port", "-1", timeout=60)
    assert result.returncode == CANNOT_START
    event = last_event(result)
    assert event["event"] == "cannot_start" and "127.0.0.1:9" in event["error"]


def test_missing_input_topics_are_named_before_the_instance_joins_or_serves_the_view(kafka, tmp_path):
    """The topic layout is checked before the web view's clients and the watchdog start, and the process ends
    at once with the line (no thread left running keeps it alive)."""
    line = [sys.executable, "-m", "consumer.cli.main", "run", "--bootstrap-servers", kafka.bootstrap_servers]
    line += ["--topic-deliveries", f"nothing-{tmp_path.name}", "--http-port", "0", "--store", "memory"]
    started = time.monotonic()
    result = subprocess.run(line, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert result.returncode == CANNOT_START
    event = last_event(result)
    assert event["event"] == "cannot_start" and f"nothing-{tmp_path.name}" in event["error"]
    assert "missing topics" in event["error"]
