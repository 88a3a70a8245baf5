"""Shared steps of the fault tests: watch an instance's readiness, wait for exact results, time recovery."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from consumer.cli.workload import Workload
from tests.runtime.exactness import assert_exact
from tests.runtime.harness import Pipeline, http_get


@dataclass
class ReadinessWatch:
    """Samples /readyz in the background: did the instance ever say it was not ready, and why."""

    port: int
    not_ready: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> ReadinessWatch:
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            try:
                status, body = http_get(self.port, "/readyz")
            except OSError:
                continue
            if status != 200:
                self.not_ready.append((time.monotonic(), json.loads(body).get("detail", "")))

    def said_not_ready_after(self, moment: float) -> bool:
        return any(at >= moment for at, _ in self.not_ready)


def until_exact(
    pipeline: Pipeline, workload: Workload, process: subprocess.Popen[bytes], timeout_s: float = 180.0
) -> float:
    """Seconds until the published KPIs equal the ground truth (then checks every output)."""
    started = time.monotonic()
    latest = pipeline.wait_for_kpis(workload.expected, timeout_s=timeout_s, processes=[process])
    missing = {d for d, e in workload.expected.items() if {k: latest.get(d, {}).get(k) for k in e} != e}
    assert not missing, f"not exact after {timeout_s} s: {sorted(missing)[:5]}"
    elapsed = time.monotonic() - started
    assert_exact(pipeline, workload)
    return elapsed


def log_lines(pipeline: Pipeline, instance: str) -> list[dict[str, Any]]:
    path = pipeline.workdir / f"{instance}.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def exact_or_exit(
    pipeline: Pipeline, workload: Workload, process: subprocess.Popen[bytes], timeout_s: float
) -> int | None:
    """Wait until the KPIs are exact (None) or the instance exits (its code), whichever comes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return process.returncode
        latest = pipeline.kpis()
        if all({k: latest.get(d, {}).get(k) for k in e} == e for d, e in workload.expected.items()):
            return None
        time.sleep(1)
    return process.poll()
