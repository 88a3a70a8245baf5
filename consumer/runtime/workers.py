"""`sendtrack run --workers N`: N member processes of the group on one machine, under one parent.

Each worker is a `sendtrack run` child with settings derived from the parent's: instance id `<id>-w<k>` (stable
across restarts, so a restarted worker's transactional id fences its crashed self), state in `<state-dir>/w<k>`, an
HTTP server on a loopback port of its own (0: any free one, written to a file the parent reads), no Deployment view,
the same group. The parent serves the configured port (ops/federation.py: the workers' metrics with a `worker`
label, health and readiness of all), forwards SIGTERM/SIGINT, and restarts a worker that crashed (exit 1, 3, 4,
0 unasked, or a signal death such as kill -9) with a backoff; a worker's exit with a code a restart cannot cure
(2 cannot start, 5 Kafka fatal, 6 state store) stops the others and ends the parent with that code.

The workers run in a process group of their own, so a terminal's Ctrl-C (sent to the whole foreground group)
reaches the parent alone and each worker gets exactly one forwarded SIGTERM, not two (a second means "now": 3).
The parent's main thread only waits, so plain Python signal handlers are enough here (runtime/signals.py exists
for a main thread blocked inside librdkafka).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from consumer.ops.federation import Target, WorkerMetrics, all_of, first_kpi
from consumer.ops.http import OpsServer, StatusSource
from consumer.runtime.app import write_atomically
from consumer.runtime.errors import CANNOT_START, CLEAN, GRACE_EXCEEDED, KAFKA_FATAL, STATE_FAILED, StartupError
from consumer.runtime.settings import Settings

FATAL = frozenset({CANNOT_START, KAFKA_FATAL, STATE_FAILED})  # the same again on a restart: end, do not loop
_TICK_S = 0.1
_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after the 1st, 2nd, ... crash in a row
_STEADY_S = 60.0  # a worker up this long has recovered: its next crash starts the backoff again
_STOP_MARGIN_S = 5.0  # past the workers' own grace period, for them to report it (exit 3) before being killed
_PARENT_CHECK_S = 1.0

Command = Callable[[Settings], list[str]]  # the command line that starts an instance (cli/run.argv)


def worker_settings(settings: Settings, index: int, port_file: Path) -> Settings:
    """Worker `index`'s settings: its own id, state and loopback port; one process, no supervisor of its own."""
    return dataclasses.replace(
        settings,
        instance_id=f"{settings.instance_id}-w{index}",
        state_dir=settings.state_dir / f"w{index}",
        http_port=0,
        http_host="127.0.0.1",
        http_port_file=port_file,
        workers=1,
        worker_of=os.getpid(),
    )


@dataclasses.dataclass
class Worker:
    index: int
    settings: Settings
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes: int = 0  # in a row, for the backoff
    restart_at: float | None = None
    # Its end seen by the loop. Not returncode: Popen.poll() and send_signal() from any thread set that, and an
    # end only they saw would never be handled (no restart).
    exit_handled: bool = False

    @property
    def name(self) -> str:
        return f"w{self.index}"

    def target(self) -> Target:
        port_file = self.settings.http_port_file
        alive = self.process is not None and self.process.returncode is None  # never poll() here: HTTP threads
        text = port_file.read_text() if alive and port_file is not None and port_file.exists() else ""
        return Target(self.name, int(text) if text else None)


class Supervisor:
    def __init__(self, settings: Settings, command: Command, log: Any, clock: Callable[[], float] = time.monotonic):
        self._settings = settings
        self._command = command
        self._log = log
        self._clock = clock
        self._ports = Path(tempfile.mkdtemp(prefix="sendtrack-workers-"))
        self.workers = [
            Worker(k, worker_settings(settings, k, self._ports / f"w{k}.port")) for k in range(settings.workers)
        ]
        self.registry = CollectorRegistry()
        self._restarts = Counter(
            "sendtrack_worker_restarts", "Workers restarted after a crash", ["worker"], registry=self.registry
        )
        self.registry.register(WorkerMetrics(self.targets))
        self._http: OpsServer | None = None
        self._signals: list[str] = []  # SIGTERM/SIGINT received, by name
        self._deadline: float | None = None  # set when the stop is forwarded
        self._result: int | None = None  # the exit code once decided (a fatal worker's, or 3)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._start_http()
            self._log.info("workers_starting", workers=len(self.workers), instance_id=self._settings.instance_id)
            for worker in self.workers:
                self._spawn(worker)
            code = self._supervise()
            self._log.info("stopped", exit_code=code)
            return code
        finally:
            self._end()
            for sig, handler in previous.items():  # a host that runs a supervisor (a test) gets its own back
                signal.signal(sig, handler)

    def _supervise(self) -> int:
        while True:
            self._forward_stop_if_asked()
            for worker in self.workers:
                self._check(worker)
            if self._deadline is not None and all(_ended(worker) for worker in self.workers):
                return self._final_code()
            self._kill_if_late()
            time.sleep(_TICK_S)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        """Counted only: the loop logs and forwards it, so the handler never races the loop (or a log line)."""
        self._signals.append(signal.Signals(signum).name)

    def _forward_stop_if_asked(self) -> None:
        if len(self._signals) >= 2 and self._result != GRACE_EXCEEDED:  # a second signal: now, as for one process
            self._result = GRACE_EXCEEDED
            self._log.warning("stopped_by_second_signal", signal=self._signals[1], exit_code=GRACE_EXCEEDED)
            self._signal_all(signal.SIGTERM)  # each worker's second: it ends at once
        elif self._signals and self._deadline is None:
            self._log.info("stop_requested", signal=self._signals[0], workers=len(self.workers))
            self._stop_all()

    def _stop_all(self) -> None:
        self._deadline = self._clock() + self._settings.grace_period_s + _STOP_MARGIN_S
        for worker in self.workers:
            worker.restart_at = None
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(sig)

    def _kill_if_late(self) -> None:
        if self._deadline is None or self._clock() < self._deadline:
            return
        self._log.error("grace_period_exceeded", seconds=self._settings.grace_period_s, exit_code=GRACE_EXCEEDED)
        self._signal_all(signal.SIGKILL)
        self._deadline = float("inf")  # killed once, said once; still stopping
        self._result = self._result or GRACE_EXCEEDED

    def _final_code(self) -> int:
        if self._result is not None:
            return self._result
        codes = [_exit_code(w.process.returncode) for w in self.workers if w.process is not None]
        return next((code for code in codes if code != CLEAN), CLEAN)

    def _end(self) -> None:
        self._signal_all(signal.SIGKILL)  # only when the parent itself failed: workers must not outlive it
        for worker in self.workers:
            if worker.process is not None:
                worker.process.wait()
        if self._http is not None:
            self._http.stop()
        shutil.rmtree(self._ports, ignore_errors=True)

    # -- workers -------------------------------------------------------------------------------------------
    def _spawn(self, worker: Worker) -> None:
        port_file = worker.settings.http_port_file
        if port_file is not None:
            port_file.unlink(missing_ok=True)  # the crashed worker's port: not the new one's
        # Its own process group: a terminal's Ctrl-C reaches the parent only, which forwards one SIGTERM.
        worker.process = subprocess.Popen(self._command(worker.settings), process_group=0)
        worker.started, worker.restart_at, worker.exit_handled = self._clock(), None, False
        self._log.info("worker_started", worker=worker.name, pid=worker.process.pid)

    def _check(self, worker: Worker) -> None:
        if worker.restart_at is not None and self._clock() >= worker.restart_at and self._deadline is None:
            self._spawn(worker)
            return
        if worker.process is None or worker.exit_handled:
            return  # never started, or its end already handled (and its restart perhaps due)
        returncode = worker.process.poll()
        if returncode is not None:
            worker.exit_handled = True
            self._exited(worker, returncode)

    def _exited(self, worker: Worker, returncode: int) -> None:
        code, how = _exit_code(returncode), _how(returncode)
        if self._deadline is not None:  # stopping: every end is expected
            self._log.info("worker_stopped", worker=worker.name, exit_code=code, how=how)
        elif code in FATAL:
            self._log.error("worker_failed", worker=worker.name, exit_code=code, how=how)
            self._result = code
            self._stop_all()
        else:
            self._schedule_restart(worker, code, how)

    def _schedule_restart(self, worker: Worker, code: int, how: str) -> None:
        if self._clock() - worker.started >= _STEADY_S:
            worker.crashes = 0
        delay = _BACKOFF_S[min(worker.crashes, len(_BACKOFF_S) - 1)]
        worker.crashes += 1
        worker.restart_at = self._clock() + delay
        self._restarts.labels(worker.name).inc()
        self._log.warning("worker_crashed", worker=worker.name, exit_code=code, how=how, restart_in_s=delay)

    def targets(self) -> Sequence[Target]:
        return [worker.target() for worker in self.workers]

    # -- HTTP ----------------------------------------------------------------------------------------------
    def _start_http(self) -> None:
        s = self._settings
        if s.http_port is None:
            return
        source = StatusSource(
            ready=lambda: all_of(self.targets(), "/readyz"),
            delivery_kpi=lambda delivery_id: first_kpi(self.targets(), delivery_id),
            alive=lambda: all_of(self.targets(), "/healthz"),
        )
        try:
            self._http = OpsServer(s.http_port, self.registry, source, host=s.http_host).start()
        except OSError as exc:
            raise StartupError(f"cannot serve HTTP on {s.http_host}:{s.http_port}: {exc.strerror or exc}") from None
        self._log.info("http_listening", host=s.http_host, port=self._http.port)
        if s.http_port_file is not None:  # the flag means the same with --workers: this process's port
            write_atomically(s.http_port_file, str(self._http.port))

    @property
    def http_port(self) -> int | None:
        return self._http.port if self._http else None


def _ended(worker: Worker) -> bool:
    """Never started, or its end handled by the loop (each end is handled once)."""
    return worker.process is None or worker.exit_handled


def _exit_code(returncode: int) -> int:
    """A signal death (negative returncode) is a crash: 1, like an uncaught bug."""
    return returncode if returncode >= 0 else 1


def _how(returncode: int) -> str:
    return f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit {returncode}"


def watch_parent(parent_pid: int, on_gone: Callable[[], None], log: Any) -> None:
    """A worker's thread: when the parent is gone (this process re-parented), stop cleanly, once."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_PARENT_CHECK_S)
        log.warning("parent_gone", parent_pid=parent_pid)
        on_gone()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
