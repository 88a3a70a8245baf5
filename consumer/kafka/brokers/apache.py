"""Apache Kafka 4.x from Maven Central as a development broker: one KRaft node (broker and controller) on loopback,
a throwaway data directory, optionally TLS, SASL_SSL with SCRAM-SHA-512 users, mutual TLS and ACLs.

Needs a JDK (17+) and Maven. ``apache_kafka/pom.xml`` names the artifacts; the first start asks Maven for their
runtime classpath, which resolves them once into the local Maven repository (~/.m2), and keeps that classpath in
``~/.cache/sendtrack`` (``SENDTRACK_KAFKA_CLASSPATH`` names another file). Then each start formats a fresh data
directory (``kafka.tools.StorageTool``) and runs ``kafka.Kafka``; readiness is a metadata answer with the cluster id
we formatted, so another broker on a requested port is never mistaken for ours.

Three listeners: CLIENT (the port clients bootstrap from; its advertised port may be a fault proxy), SETUP
(plaintext, the broker's own inter-broker traffic and the tests' administration, a super user when ACLs are on;
never advertised to clients of CLIENT) and CONTROLLER.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumer.kafka.brokers.base import HOST, DevBroker, DevBrokerError, free_port

ARTIFACTS = Path(__file__).with_name("apache_kafka")
POM = ARTIFACTS / "pom.xml"
LOG4J_CONFIG = ARTIFACTS / "log4j2.properties"
SCRAM_MECHANISM = "SCRAM-SHA-512"
SETUP_PRINCIPAL = "User:ANONYMOUS"  # who connects on the plaintext SETUP and CONTROLLER listeners
_JVM_OPTIONS = [
    "-Xms128m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]
# One node, so every internal topic has one replica; small pools and buffers because tests start many brokers on
# a 2-core machine; no initial rebalance delay so groups form at once.
_SINGLE_NODE = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "8",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "background.threads": "4",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    "num.partitions": "1",
    # Topics are created on purpose (sendtrack --create-topics, the tests' admin): a typo must not make one.
    "auto.create.topics.enable": "false",
}


def kafka_version() -> str:
    """The Kafka version pom.xml names."""
    found = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert found, f"{POM} names no kafka.version"
    return found.group(1)


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found or not Path(found).exists():
        raise DevBrokerError("Apache Kafka needs a JDK (17 or newer): none found on PATH or in JAVA_HOME")
    return found


def classpath() -> str:
    """The broker's and tools' runtime classpath, resolved once per version of pom.xml."""
    pom = POM.read_bytes()
    cache = Path(
        os.environ.get("SENDTRACK_KAFKA_CLASSPATH")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "sendtrack"
        / f"apache-kafka-{hashlib.sha256(pom).hexdigest()[:12]}.classpath"
    )
    if cache.exists():
        jars = cache.read_text().strip()
        if jars and all(Path(jar).exists() for jar in jars.split(os.pathsep)):
            return jars
    return _resolve(cache)


def _resolve(cache: Path) -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevBrokerError("Apache Kafka's artifacts are resolved with Maven: `mvn` is not on PATH")
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(f".{os.getpid()}.partial")
    resolved = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:build-classpath", "-Dmdep.includeScope=runtime",
         f"-Dmdep.outputFile={partial}"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if resolved.returncode != 0 or not partial.exists():
        tail = (resolved.stdout + resolved.stderr).strip().splitlines()[-5:]
        raise DevBrokerError("Maven could not resolve Apache Kafka's artifacts: " + " | ".join(tail))
    partial.replace(cache)  # atomic: a concurrent resolver sees the old file or the whole new one
    return cache.read_text().strip()


def tool_command(main_class: str, *args: str) -> list[str]:
    """A Kafka command-line tool from the same artifacts, e.g. ConsumerGroupCommand, as a command line."""
    return [java(), "-Xmx256m", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath(), main_class, *args]


def new_cluster_id() -> str:
    """A Kafka Uuid in its base64 form; never starting with '-', which a command line would take for a flag."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class BrokerSecurity:
    """How the CLIENT listener is secured: always TLS with ``certificate`` and ``key`` (PEM; the key unencrypted
    PKCS#8); ``scram_users`` (name → password, created at format time) make it SASL_SSL with SCRAM-SHA-512;
    ``client_ca`` makes TLS mutual (client certificates signed by it are required); ``acls`` turns on the
    StandardAuthorizer, where only the SETUP listener's principal is a super user."""

    certificate: Path
    key: Path
    client_ca: Path | None = None
    scram_users: Mapping[str, str] = field(default_factory=dict)
    acls: bool = False

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.scram_users else "SSL"

    def properties(self, keystore: Path) -> dict[str, str]:
        settings = {
            "listener.name.client.ssl.keystore.type": "PEM",
            "listener.name.client.ssl.keystore.location": str(keystore),
            # The certificate's CN is the principal of a mutual TLS client (User:client, not User:CN=client,...).
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
        }
        if self.client_ca is not None:
            settings |= {
                "listener.name.client.ssl.client.auth": "required",
                "listener.name.client.ssl.truststore.type": "PEM",
                "listener.name.client.ssl.truststore.location": str(self.client_ca),
            }
        if self.scram_users:
            mechanism = SCRAM_MECHANISM.lower()
            settings |= {
                "sasl.enabled.mechanisms": SCRAM_MECHANISM,
                "listener.name.client.sasl.enabled.mechanisms": SCRAM_MECHANISM,
                f"listener.name.client.{mechanism}.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            }  # fmt: skip
        if self.acls:
            settings |= {
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": SETUP_PRINCIPAL,
            }
        return settings

    def format_arguments(self) -> list[str]:
        scram = [f"{SCRAM_MECHANISM}=[name={name},password={password}]" for name, password in self.scram_users.items()]
        return [argument for entry in scram for argument in ("--add-scram", entry)]


class ApacheKafkaBroker(DevBroker):
    """A single-node Apache Kafka (KRaft) broker on 127.0.0.1 with a throwaway data directory."""

    name = "Apache Kafka"
    startup_timeout_s = 90.0
    stop_timeout_s = 5.0  # the data is thrown away: a broker slow to shut down is killed

    def __init__(
        self,
        port: int = 0,
        *,
        security: BrokerSecurity | None = None,
        properties: Mapping[str, str] | None = None,
        **options: Any,
    ) -> None:
        """``options``: DevBroker's (log_path, advertised_port, startup_timeout)."""
        super().__init__(port, **options)
        self._security = security
        self._extra = dict(properties or {})
        self._cluster_id = new_cluster_id()
        self._setup_port: int | None = None
        self._data: Path | None = None

    @property
    def description(self) -> str:
        return f"Apache Kafka {kafka_version()} (KRaft, one combined node, from Maven Central)"

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def setup_servers(self) -> str:
        """The plaintext SETUP listener: administration that must not depend on the client listener's security."""
        if self._setup_port is None:
            raise DevBrokerError("The Apache Kafka broker has not been started.")
        return f"{HOST}:{self._setup_port}"

    @property
    def security_protocol(self) -> str:
        return self._security.protocol if self._security else "PLAINTEXT"

    def _ready_probe_servers(self) -> str | None:
        return self.setup_servers

    def _prepare(self) -> list[str]:
        self._setup_port = free_port()
        controller_port = free_port()
        self._data = Path(tempfile.mkdtemp(prefix="sendtrack-kafka-"))
        config = self._data / "server.properties"
        config.write_text(self._properties(controller_port))
        self._format(config)
        return [
            java(), *_JVM_OPTIONS, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp", classpath(), "kafka.Kafka", str(config),
        ]  # fmt: skip

    def _properties(self, controller_port: int) -> str:
        assert self._data is not None
        client = self.security_protocol
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{controller_port}",
            "listeners": f"CLIENT://{HOST}:{self.port},SETUP://{HOST}:{self._setup_port},"
            f"CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"CLIENT://{self.advertised_servers},SETUP://{HOST}:{self._setup_port}",
            "listener.security.protocol.map": f"CLIENT:{client},SETUP:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "SETUP",
            "log.dirs": str(self._data / "logs"),
            **_SINGLE_NODE,
        }
        if self._security is not None:
            keystore = self._data / "client-listener.pem"
            # Kafka's PEM keystore file holds the key and then its certificate chain.
            keystore.write_bytes(self._security.key.read_bytes() + self._security.certificate.read_bytes())
            settings |= self._security.properties(keystore)
        settings |= self._extra
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _format(self, config: Path) -> None:
        extra = self._security.format_arguments() if self._security else []
        command = [
            java(), "-Xmx256m", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath(),
            "kafka.tools.StorageTool", "format", "-t", self._cluster_id, "-c", str(config), *extra,
        ]  # fmt: skip
        formatted = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if formatted.returncode != 0:
            tail = (formatted.stdout + formatted.stderr).strip().splitlines()[-3:]
            raise DevBrokerError("Apache Kafka's storage format failed: " + " | ".join(tail))

    def _cleanup(self) -> None:
        data, self._data = self._data, None
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)
