"""What /readyz and /healthz say, and the watchdog that ends a main loop that stopped moving.

Readiness is the conjunction of everything that must hold for this instance to be doing its share:
in the group, restored, not stopping, Kafka reachable, checkpoints succeeding, the loop moving.
Each failing condition is a named trouble with a detail, so /readyz says what is wrong.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from consumer.runtime.errors import STUCK


class Health:
    def __init__(self) -> None:
        self._troubles: dict[str, str] = {}  # each stage's runner adds that it is joining its group
        self._lock = threading.Lock()
        self.watchdog: Watchdog | None = None

    def trouble(self, name: str, detail: str) -> None:
        with self._lock:
            self._troubles[name] = detail

    def clear(self, name: str) -> None:
        with self._lock:
            self._troubles.pop(name, None)

    def has(self, name: str) -> bool:
        return name in self._troubles

    def readiness(self) -> tuple[bool, str]:
        alive, detail = self.liveness()
        if not alive:
            return False, detail
        with self._lock:
            troubles = list(self._troubles.values())
        return (False, "; ".join(troubles)) if troubles else (True, "ready")

    def liveness(self) -> tuple[bool, str]:
        if self.watchdog is not None:
            stalled = self.watchdog.stalled_for()
            if stalled >= self.watchdog.warn_after_s:
                return False, f"main loop stalled in {self.watchdog.phase} for {stalled:.0f} s"
        return True, "alive"


class Watchdog:
    """The main loop beats at every step; a beat missing for timeout_s means it is stuck somewhere no
    timeout reaches (librdkafka did not honour one, seen for 9 minutes). Then the process exits with
    STUCK so the orchestrator restarts it: restore makes that exact. Half-way, health turns red."""

    def __init__(self, timeout_s: float, log: Any, exit_: Callable[[int], None] = os._exit) -> None:
        self.timeout_s = timeout_s
        self.warn_after_s = timeout_s / 2
        self.phase = "starting"
        self._last = time.monotonic()
        self._log = log
        self._exit = exit_
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def beat(self, phase: str) -> None:
        self.phase = phase
        self._last = time.monotonic()

    def stalled_for(self) -> float:
        return time.monotonic() - self._last

    def _watch(self) -> None:
        while not self._stopped.wait(min(1.0, self.timeout_s / 10)):
            stalled = self.stalled_for()
            if stalled >= self.timeout_s:
                self._log.critical("stuck", phase=self.phase, seconds=round(stalled, 1), exit_code=STUCK)
                sys.stderr.flush()
                self._exit(STUCK)
                return
