"""SIGTERM / SIGINT handled on a thread of their own, so a stop works whatever the main thread is doing.

Python runs signal handlers on the main thread between bytecodes: blocked inside a librdkafka call, it
would never see them. Here the signals are blocked for every thread and a dedicated one waits for them:
the first asks for a clean stop and starts the grace-period timer, which ends the process with
GRACE_EXCEEDED if the stop is not done in time; a second signal ends it at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from consumer.runtime.errors import GRACE_EXCEEDED

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class StopSignals:
    def __init__(self, on_stop: Callable[[], None], grace_s: float, log: Any) -> None:
        self._on_stop = on_stop
        self._grace_s = grace_s
        self._log = log
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._installed = False

    def install(self) -> bool:
        """Take the signals over; call before any other thread starts (threads inherit the mask, and a
        thread that does not block them would receive a SIGTERM and die of it). Idempotent."""
        if threading.current_thread() is not threading.main_thread():
            return False  # embedded (tests, demo): the host owns the signals
        if self._installed:
            return True
        self._installed = True
        for sig in STOP_SIGNALS:  # an ignored signal is discarded, not queued for sigwait: inherited SIG_IGN undone
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        threading.Thread(target=self._wait, name="signals", daemon=True).start()
        return True

    def start_grace_period(self) -> None:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self._grace_s, self._exceeded)
                self._timer.daemon = True
                self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _wait(self) -> None:
        received = signal.sigwait(STOP_SIGNALS)
        self._log.info("stop_requested", signal=signal.Signals(received).name, grace_period_s=self._grace_s)
        self.start_grace_period()
        self._on_stop()
        received = signal.sigwait(STOP_SIGNALS)
        self._log.warning("stopped_by_second_signal", signal=signal.Signals(received).name)
        self._exit()

    def _exceeded(self) -> None:
        self._log.error("grace_period_exceeded", seconds=self._grace_s, exit_code=GRACE_EXCEEDED)
        self._exit()

    @staticmethod
    def _exit() -> None:
        sys.stderr.flush()
        os._exit(GRACE_EXCEEDED)
