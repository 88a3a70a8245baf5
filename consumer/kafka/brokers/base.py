"""What every development broker shares: a subprocess on loopback, a free or requested port, readiness proven by
the broker's own cluster id, and pause/resume/stop for fault tests. Subclasses say how to spawn their broker."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.05
_QUIET = logging.getLogger("sendtrack.dev_broker.readiness")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class DevBrokerError(RuntimeError):
    """A development broker could not be started."""


def free_port() -> int:
    """An unused port; the tiny race until the broker binds it surfaces as an early exit at start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int) -> None:
    """Fail before spawning when someone already listens there (the broker would only die a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a server binds: a port left in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise DevBrokerError(f"port {port} on {HOST} is not available: {reason}") from None


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=POLL_INTERVAL_S):
            return True
    except OSError:
        return False


class DevBroker:
    """A single-node broker subprocess on 127.0.0.1 (``port=0`` picks a free port).

    ``advertised_port`` is where clients are sent after bootstrapping (a proxy in front of the broker); by default
    the listening port. Output goes to ``log_path`` when given.
    """

    name = "broker"
    startup_timeout_s = 30.0
    stop_timeout_s = 1.0

    def __init__(
        self,
        port: int = 0,
        *,
        log_path: str | os.PathLike[str] | None = None,
        advertised_port: int | None = None,
        startup_timeout: float | None = None,
    ) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._advertised_port = advertised_port
        self._log_path = Path(log_path) if log_path is not None else None
        if startup_timeout is not None:
            self.startup_timeout_s = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._paused = False

    # -- what a subclass provides -------------------------------------------------------------------
    @property
    def description(self) -> str:
        """What a report names as the broker it ran on."""
        return self.name

    @property
    def cluster_id(self) -> str:
        raise NotImplementedError

    def _prepare(self) -> list[str]:
        """Everything before the spawn (ports are known by now); returns the broker's command line."""
        raise NotImplementedError

    def _ready_probe_servers(self) -> str | None:
        """A plaintext address that answers metadata once the broker is up; None when none does."""
        return self.bootstrap_servers

    def _cleanup(self) -> None:
        """After the process has ended."""

    # -- shared -------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise DevBrokerError(f"The {self.name} broker has not been started.")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def advertised_servers(self) -> str:
        """Where clients end up after bootstrapping: the proxy's address when one is advertised."""
        return f"{HOST}:{self._advertised_port or self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> DevBroker:
        """Spawn the broker and block until it answers a metadata request with its own cluster id."""
        if self.running:
            return self
        if self._requested_port:
            check_port_free(self._requested_port)
        self._port = self._requested_port or free_port()
        try:
            self._process = self._spawn(self._prepare())
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Terminate the broker, killing it if it ignores SIGTERM for ``timeout`` seconds (a paused one at once)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            if self._paused:
                process.kill()
            else:
                process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_s if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._paused = False
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._cleanup()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and nothing answers, as with a hung broker."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise DevBrokerError(f"The {self.name} broker is not running.")
        assert self._process is not None
        self._process.send_signal(sig)

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        output: IO[bytes] | int = subprocess.DEVNULL
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = output = self._log_path.open("ab")
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if self._log_file is not None else subprocess.DEVNULL,
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        probe = self._ready_probe_servers()
        probe_port = int(probe.rsplit(":", 1)[1]) if probe else self.port
        # A plain TCP probe first: librdkafka logs every refused connection to stderr, noise while binding.
        while not port_open(probe_port):
            self._check_alive()
            self._check_deadline(deadline)
            time.sleep(POLL_INTERVAL_S)
        if probe:  # else the port was free before we spawned, so it is ours
            self._wait_for_metadata(probe, deadline)

    def _wait_for_metadata(self, servers: str, deadline: float) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        # A Python logger, not librdkafka's stderr: the advertised address may be a proxy that is not up yet.
        admin = AdminClient({"bootstrap.servers": servers, "logger": _QUIET})
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            try:
                metadata = admin.list_topics(timeout=max(min(remaining, 2.0), 0.1))
            except KafkaException:
                self._check_deadline(deadline)
                continue
            if metadata.cluster_id == self.cluster_id and metadata.brokers:
                return
            self._check_deadline(deadline)
            time.sleep(POLL_INTERVAL_S)

    def _check_alive(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise DevBrokerError(
                f"The {self.name} broker exited with code {code} during startup on port {self._port}"
                f" (port already in use?).{self._log_hint()}"
            )

    def _check_deadline(self, deadline: float) -> None:
        if time.monotonic() >= deadline:
            raise DevBrokerError(
                f"The {self.name} broker on {self.bootstrap_servers} was not ready within"
                f" {self.startup_timeout_s:.0f}s.{self._log_hint()}"
            )

    def _log_hint(self) -> str:
        if self._log_path is None:
            return " Pass log_path=... to capture the broker's output."
        return f" See the broker log at {self._log_path}."
