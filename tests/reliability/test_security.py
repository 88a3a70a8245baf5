"""Security end to end on Apache Kafka: SASL_SSL with a SCRAM-SHA-512 user made at format time, and mutual TLS.

Two brokers serve the module (consumer/kafka/brokers/apache.py): SASL_SSL with ACLs on, and mutual TLS (the client
certificate's CN is the principal). Over each, the sample delivery goes through `run` (over SASL_SSL with an ingest
stage and the view: its KPI reader, its group lookup and its actions' producer) and the tools `produce`, `kpis`,
`compute-stats` and `tail`; no output, log or /metrics holds the SCRAM password or the client key's password.
A wrong password, an unknown CA and an expired client certificate are one line and the documented exit code
within seconds. With ACLs on, the pipeline has exactly the permissions the README lists, and without one of them an
instance or tool ends with the line naming it. The brokers' own setup (topics, ACLs, reading the results) goes
through their plaintext SETUP listener, whose principal is the only super user.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography", reason="needs the 'test' extra")

import bcrypt
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from consumer.cli.options import CANNOT_RUN
from consumer.cli.quarantine import NOT_APPLIED
from consumer.cli.quarantine import READER_GROUP as QUARANTINE_READER
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import ADDRESS_SIGNAL, ADDRESS_STATUS, DELIVERY_EVENT, MTA_EVENT
from consumer.kafka.admin import ensure_topics
from consumer.kafka.brokers.apache import ApacheKafkaBroker, BrokerSecurity
from consumer.kafka.partitioners import partition_of
from consumer.runtime.errors import KAFKA_FATAL
from consumer.runtime.settings import IngestSource
from tests import samples
from tests.cli.tools import outcome, sendtrack
from tests.core.builders import mta, prepared
from tests.quarantine.test_end_to_end import published
from tests.reliability.proxy import Certificates, make_certificates
from tests.runtime.harness import Pipeline, free_port, http_get, stop, wait_http

SECRET = "pa55word-that-must-never-show"  # the SCRAM password, and the password of the client keys
USER = "sendtrack"  # the SCRAM user, and the CN (so the principal) of the client certificate
TOOL_USER = "tools"  # a SCRAM user of its own: the tools' fixed group names need permissions of their own
FAIL_WITHIN_S = 15.0  # a refused handshake, credential or permission is reported within this
KPI_TIMEOUT_S = 90.0
INGEST = "kumomta"
EXPECTED = samples.EXPECTED_KPI | {"state": "FINISHED", "final": True}  # the sample's validity period is over
# samples/spring-sale.deliveries.jsonl, then samples/ingest/kumomta.jsonl through the ingest stage (README).
EXPECTED_KUMOMTA = {
    "delivery_id": samples.DELIVERY_ID,
    "state": "FINISHED",
    "to_deliver": 12,
    "processed": 7,
    "sent": 2,
    "complaints": 1,
    "failures_by_reason": {"mailbox_full": 1, "refused": 1, "unreachable": 1, "user_unknown": 2},
}
Acl = tuple[str, str, str]  # resource type, literal name, operation: one row of the README's table


@dataclass(frozen=True)
class Secured:
    """A secured broker and the client settings that reach it, as SENDTRACK_KAFKA_* variables."""

    broker: ApacheKafkaBroker
    security: dict[str, str]

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def env(self) -> dict[str, str]:
        return {"SENDTRACK_KAFKA_" + name.upper().replace(".", "_"): value for name, value in self.security.items()}

    def but(self, **changes: str) -> Secured:
        return replace(self, security=self.security | {k.replace("_", "."): v for k, v in changes.items()})


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificates]:
    directory = tmp_path_factory.mktemp("tls")
    clients = make_certificates(directory, "client", SECRET, subject=USER)
    return {
        "broker": make_certificates(directory, "broker"),
        "client": clients,
        "expired": make_certificates(directory, "expired", SECRET, subject=USER, issuer=clients, expired=True),
        "stranger": make_certificates(directory, "stranger"),
    }


@pytest.fixture(scope="module")
def sasl(certificates: dict[str, Certificates], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    broker = certificates["broker"]
    security = BrokerSecurity(broker.cert, broker.key, scram_users={USER: SECRET, TOOL_USER: SECRET}, acls=True)
    log = tmp_path_factory.mktemp("sasl-broker") / "kafka.log"
    with ApacheKafkaBroker(log_path=log, security=security) as kafka:
        client = {
            "security.protocol": "SASL_SSL",
            "ssl.ca.location": str(broker.ca),
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": USER,
            "sasl.password": SECRET,
        }
        yield Secured(kafka, client)


@pytest.fixture(scope="module")
def mtls(certificates: dict[str, Certificates], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    broker, client = certificates["broker"], certificates["client"]
    security = BrokerSecurity(broker.cert, broker.key, client_ca=client.ca)
    log = tmp_path_factory.mktemp("mtls-broker") / "kafka.log"
    with ApacheKafkaBroker(log_path=log, security=security) as kafka:
        settings = {
            "security.protocol": "SSL",
            "ssl.ca.location": str(broker.ca),
            "ssl.certificate.location": str(client.cert),
            "ssl.key.location": str(client.key),
            "ssl.key.password": SECRET,
        }
        yield Secured(kafka, settings)


# -- the permissions (README, "Security") ------------------------------------------------------------
def run_acls(pipeline: Pipeline, instance: str, source: str | None = None, view: bool = False) -> list[Acl]:
    """What `sendtrack run` needs: exactly-once, with an ingest stage reading `source`, with the view."""
    t, group = pipeline.topics, pipeline.group
    acls = [("TOPIC", topic, "READ") for topic in (*t.inputs, t.changelog)]
    acls += [("TOPIC", topic, "WRITE") for topic in (t.kpis, t.sending_logs, t.dlq, t.changelog)]
    acls += [("GROUP", group, "READ"), ("GROUP", f"{group}.restore", "DESCRIBE")]
    acls += [("TRANSACTIONAL_ID", f"{group}-{instance}", "WRITE")]
    if source is not None:
        stage = f"{group}.ingest.{INGEST}"
        acls += [("TOPIC", source, "READ"), ("TOPIC", t.mta_events, "WRITE"), ("GROUP", stage, "READ")]
        acls += [("TRANSACTIONAL_ID", f"{stage}-{instance}", "WRITE")]
    if view:
        acls += [("TOPIC", t.kpis, "READ"), ("GROUP", f"{group}.web", "DESCRIBE")]
        acls += [("TOPIC", t.deliveries, "WRITE"), ("TOPIC", t.control, "WRITE")]  # confirmations, Compute stats
    return acls


def quarantine_run_acls(pipeline: Pipeline, instance: str) -> list[Acl]:
    """What `run --quarantine` adds: the delivery stage's signals, and the quarantine stage (exactly-once)."""
    t, stage = pipeline.topics, f"{pipeline.group}.quarantine"
    acls = [("TOPIC", t.address_signals, "WRITE"), ("TOPIC", t.address_signals, "READ")]
    acls += [("TOPIC", t.address_quarantine, "WRITE"), ("TOPIC", t.dlq, "WRITE")]
    acls += [("TOPIC", t.quarantine_changelog, "READ"), ("TOPIC", t.quarantine_changelog, "WRITE")]
    acls += [("GROUP", stage, "READ"), ("GROUP", f"{stage}.restore", "DESCRIBE")]
    return [*acls, ("TRANSACTIONAL_ID", f"{stage}-{instance}", "WRITE")]


def tool_acls(pipeline: Pipeline, source: str) -> dict[str, list[Acl]]:
    """What each tool needs, as the tests use them: produce to deliveries and the ingest source, compute-stats,
    and kpis and tail of the KPI topic."""
    t = pipeline.topics
    return {
        "produce": [("TOPIC", t.deliveries, "WRITE"), ("TOPIC", source, "WRITE")],
        "compute-stats": [("TOPIC", t.control, "WRITE")],
        "kpis": [("TOPIC", t.kpis, "READ"), ("GROUP", "sendtrack-kpis-reader", "DESCRIBE")],
        "tail": [("TOPIC", t.kpis, "READ"), ("GROUP", "sendtrack-tail", "DESCRIBE")],
    }


def _bindings(acls: Iterable[Acl], user: str, make: type[AclBindingFilter] = AclBinding) -> list[Any]:
    return [
        make(
            ResourceType[kind], name, ResourcePatternType.LITERAL, f"User:{user}", "*",
            AclOperation[operation], AclPermissionType.ALLOW,
        )
        for kind, name, operation in set(acls)
    ]  # fmt: skip


def grant(kafka: Secured, acls: Iterable[Acl], user: str = USER) -> None:
    """ALLOW for User:<user>, through the SETUP listener (its principal is the super user)."""
    admin = AdminClient({"bootstrap.servers": kafka.broker.setup_servers})  # alive until every result came
    for created in admin.create_acls(_bindings(acls, user)).values():
        created.result()


def revoke(kafka: Secured, acls: Iterable[Acl], user: str = USER) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.broker.setup_servers})
    for deleted in admin.delete_acls(_bindings(acls, user, AclBindingFilter)).values():
        assert deleted.result(), "no such ACL"


def _pipeline(kafka: Secured, workdir: Path, source: str | None = None) -> Pipeline:
    """Topics (and the ingest source) made through the SETUP listener."""
    pipeline = Pipeline(kafka.broker.setup_servers, workdir)
    if source is not None:
        admin = AdminClient({"bootstrap.servers": kafka.broker.setup_servers})
        admin.create_topics([NewTopic(source, pipeline.partitions, 1)])[source].result()
    return pipeline


# -- the pipeline ------------------------------------------------------------------------------------------
def test_the_sample_delivery_over_sasl_ssl_with_exactly_the_readme_acls(sasl: Secured, tmp_path: Path) -> None:
    """`run` with an ingest stage and the view, and every tool, with the README's permissions and no more."""
    source = f"{tmp_path.name}.kumomta"
    pipeline = _pipeline(sasl, tmp_path, source)
    tools = [acl for acls in tool_acls(pipeline, source).values() for acl in acls]
    grant(sasl, run_acls(pipeline, "a", source, view=True) + tools)
    output = [
        _tool(sasl, "produce", "--topic", pipeline.topics.deliveries, "--schema", DELIVERY_EVENT,
              str(samples.DELIVERIES_FILE)),
        _tool(sasl, "produce", "--topic", source, "--format", INGEST, str(samples.SAMPLES / "ingest/kumomta.jsonl")),
    ]  # fmt: skip
    port = free_port()
    web = tmp_path / "web.yml"
    password = bcrypt.hashpw(b"view-password", bcrypt.gensalt(4)).decode()
    web.write_text(f"basic_auth_users: {{alice: '{password}'}}\nsendtrack_roles: {{alice: [start_deliveries]}}\n")
    ingest = (IngestSource(INGEST, source),)
    instance = _start(sasl, pipeline, "a", http_port=port, http_host="127.0.0.1", ingest=ingest, web_config=web)
    try:
        kpi = _wait_for_kpi(pipeline, EXPECTED_KUMOMTA, instance)
        output += _tools_on_the_kpis(sasl, pipeline, kpi)
        listed = _view(port, "/api/deliveries")["deliveries"]  # the view's KPI reader
        assert [entry["delivery_id"] for entry in listed] == [samples.DELIVERY_ID]
        _view(port, f"/api/deliveries/{samples.DELIVERY_ID}/compute-stats", b"{}")  # the actions' producer
        _wait_for_kpi(pipeline, EXPECTED_KUMOMTA | {"version": kpi["version"] + 2}, instance)
        output.append(http_get(port, "/metrics")[1].decode())
        assert stop(instance) == 0
    finally:
        instance.kill()
    _assert_no_secret([*output, (tmp_path / "a.log").read_text()])


def test_the_sample_delivery_over_mutual_tls(mtls: Secured, tmp_path: Path) -> None:
    pipeline = _pipeline(mtls, tmp_path)
    output = [
        _tool(mtls, "produce", "--topic", pipeline.topics.deliveries, "--schema", DELIVERY_EVENT,
              str(samples.DELIVERIES_FILE)),
        _tool(mtls, "produce", "--topic", pipeline.topics.mta_events, "--schema", MTA_EVENT, str(samples.MTA_FILE)),
    ]  # fmt: skip
    port = free_port()
    instance = _start(mtls, pipeline, "a", http_port=port, http_host="127.0.0.1")
    try:
        wait_http(port, "/readyz")
        output += _tools_on_the_kpis(mtls, pipeline, _wait_for_kpi(pipeline, EXPECTED, instance))
        output.append(http_get(port, "/metrics")[1].decode())
        assert stop(instance) == 0
    finally:
        instance.kill()
    _assert_no_secret([*output, (tmp_path / "a.log").read_text()])


def _tools_on_the_kpis(kafka: Secured, pipeline: Pipeline, kpi: dict[str, Any]) -> list[str]:
    """`kpis` shows the KPI, `tail` the record, and `compute-stats` makes the instance republish it."""
    topic = pipeline.topics.kpis
    shown = _tool(kafka, "kpis", "--topic", topic, "--delivery", samples.DELIVERY_ID, "--json")
    assert json.loads(shown) == kpi
    tailed = _tool(kafka, "tail", topic, "--as", "avro:delivery_kpi", "--from-beginning", "--json")
    assert samples.DELIVERY_ID in tailed
    asked = _tool(kafka, "compute-stats", "--topic", pipeline.topics.control, samples.DELIVERY_ID)
    _wait_for_kpi(pipeline, {"version": kpi["version"] + 1})
    return [shown, tailed, asked]


def _tool(kafka: Secured, name: str, *args: str) -> str:
    """Run a tool that must succeed; its stdout and stderr together."""
    code, stdout, stderr = outcome(sendtrack(name, "--bootstrap-servers", kafka.bootstrap, *args, env=kafka.env))
    assert code == 0, stderr
    return stdout + stderr


def _start(kafka: Secured, pipeline: Pipeline, instance: str, **settings: Any) -> subprocess.Popen[bytes]:
    """An instance on the secured listener; its security settings come from the environment (not the command
    line, where a password would show in the process list)."""
    line = pipeline.run_args(instance, store="memory", **settings)
    line[line.index("--bootstrap-servers") + 1] = kafka.bootstrap
    log = open(pipeline.workdir / f"{instance}.log", "ab")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(line, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **kafka.env})


def _wait_for_kpi(pipeline: Pipeline, expected: dict[str, Any], *running: subprocess.Popen[bytes]) -> dict[str, Any]:
    kpi = pipeline.wait_for_kpis({samples.DELIVERY_ID: expected}, KPI_TIMEOUT_S, running).get(samples.DELIVERY_ID, {})
    assert {k: kpi.get(k) for k in expected} == expected
    return kpi


def _view(port: int, path: str, body: bytes | None = None) -> Any:
    """A JSON answer of the view as alice (a POST when there is a body), which must be a success."""
    from urllib.request import Request, urlopen

    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    headers["Authorization"] = "Basic " + base64.b64encode(b"alice:view-password").decode()
    with urlopen(Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers), timeout=10) as answer:
        return json.loads(answer.read())


def _assert_no_secret(texts: list[str]) -> None:
    assert not [text for text in texts if SECRET in text]


# -- refusals ---------------------------------------------------------------------------------------------
TOOLS = {
    "kpis": ["kpis"],
    "produce": ["produce", "--topic", "mta.events", str(samples.MTA_FILE)],
    "compute-stats": ["compute-stats", samples.DELIVERY_ID],
    "tail": ["tail", "delivery.kpis"],
}


def _refused_fast(kafka: Secured, beginning: str, workdir: Path) -> str:
    """Every tool exits 2 and `run` exits 5 within FAIL_WITHIN_S, each with one line that starts with
    `beginning` and holds no secret; the rest of that line, librdkafka's reason, is returned."""
    running = {
        name: sendtrack(*args, "--bootstrap-servers", kafka.bootstrap, env=kafka.env) for name, args in TOOLS.items()
    }
    instance = _start(kafka, Pipeline(kafka.broker.setup_servers, workdir), "refused")
    reasons = set()
    for name, process in running.items():
        code, stdout, stderr = outcome(process, timeout_s=FAIL_WITHIN_S)
        assert (code, stdout) == (CANNOT_RUN, "")
        [line] = stderr.splitlines()
        assert line.startswith(f"sendtrack {name}: {beginning}"), line
        reasons.add(line.removeprefix(f"sendtrack {name}: {beginning}"))
    event = _ended(instance, workdir / "refused.log")
    assert event["error"].startswith(beginning)
    reasons.add(event["error"].removeprefix(beginning))
    [reason] = reasons
    return reason


def _ended(instance: subprocess.Popen[bytes], log: Path, within_s: float = FAIL_WITHIN_S) -> dict[str, Any]:
    """The instance's last log line, once it ended by itself within `within_s` with kafka_fatal; its log holds
    no secret."""
    try:
        code = instance.wait(within_s)
    except subprocess.TimeoutExpired:
        instance.kill()
        raise AssertionError(f"still running after {within_s} s:\n{log.read_text()[-3000:]}") from None
    text = log.read_text()
    _assert_no_secret([text])
    event = json.loads(text.splitlines()[-1])
    assert (code, event["event"], event["exit_code"]) == (KAFKA_FATAL, "kafka_fatal", KAFKA_FATAL), text[-3000:]
    return event


def test_a_wrong_password_is_one_line_and_the_documented_exit_code(sasl: Secured, tmp_path: Path) -> None:
    wrong = sasl.but(sasl_password=f"wrong-{SECRET}")
    reason = _refused_fast(wrong, f"Kafka at {sasl.bootstrap} refused the credentials: ", tmp_path)
    assert reason.startswith("SASL authentication error: Authentication failed")


def test_an_unknown_ca_is_one_line_and_the_documented_exit_code(
    sasl: Secured, certificates: dict[str, Certificates], tmp_path: Path
) -> None:
    stranger = sasl.but(ssl_ca_location=str(certificates["stranger"].ca))
    reason = _refused_fast(stranger, f"TLS handshake with Kafka at {sasl.bootstrap} failed: ", tmp_path)
    assert "certificate verify failed" in reason


def test_an_expired_client_certificate_is_one_line_and_the_documented_exit_code(
    mtls: Secured, certificates: dict[str, Certificates], tmp_path: Path
) -> None:
    expired = certificates["expired"]
    old = mtls.but(ssl_certificate_location=str(expired.cert), ssl_key_location=str(expired.key))
    reason = _refused_fast(old, f"TLS handshake with Kafka at {mtls.bootstrap} failed: ", tmp_path)
    # Java's TLS names no reason to the client (the broker's log says the certificate expired).
    assert (
        reason == "the broker refused the client certificate (ssl/tls alert certificate unknown: SSL alert number 46)"
    )


# -- one permission missing ----------------------------------------------------------------------------------
MISSING = {  # what is removed, from the pipeline's names and the instance's id
    "read of an input": lambda p, i: ("TOPIC", p.topics.mta_events, "READ"),
    "write of an output": lambda p, i: ("TOPIC", p.topics.kpis, "WRITE"),
    "write of the changelog": lambda p, i: ("TOPIC", p.topics.changelog, "WRITE"),
    "the transactional id": lambda p, i: ("TRANSACTIONAL_ID", f"{p.group}-{i}", "WRITE"),
    "the group": lambda p, i: ("GROUP", p.group, "READ"),
    "the restore reader's group": lambda p, i: ("GROUP", f"{p.group}.restore", "DESCRIBE"),
}
RESOURCE_NAMES = {"TOPIC": "topic", "GROUP": "group", "TRANSACTIONAL_ID": "transactional id"}


def _refusal(kind: str, name: str, operation: str) -> str:
    return f"Kafka refused {operation} on {RESOURCE_NAMES[kind]} {name!r}: the principal lacks that ACL"


def _with_deliveries(kafka: Secured, workdir: Path) -> Pipeline:
    pipeline = _pipeline(kafka, workdir)
    deliveries = samples.events(samples.DELIVERIES_FILE, DELIVERY_EVENT)
    pipeline.produce_events(pipeline.topics.deliveries, DELIVERY_EVENT, deliveries)
    return pipeline


@pytest.mark.parametrize("missing", MISSING)
def test_an_instance_without_one_permission_ends_naming_it(sasl: Secured, tmp_path: Path, missing: str) -> None:
    pipeline = _with_deliveries(sasl, tmp_path)
    kind, name, operation = removed = MISSING[missing](pipeline, "a")
    grant(sasl, [acl for acl in run_acls(pipeline, "a") if acl != removed])
    event = _ended(_start(sasl, pipeline, "a"), tmp_path / "a.log", within_s=30)
    assert event["error"] == _refusal(kind, name, operation)


def test_a_permission_revoked_while_running_ends_the_instance_naming_it(sasl: Secured, tmp_path: Path) -> None:
    """Found when a transaction is refused (AddPartitionsToTxn names no record): never a retry loop."""
    pipeline = _pipeline(sasl, tmp_path)
    grant(sasl, run_acls(pipeline, "a", view=True))
    port = free_port()
    instance = _start(sasl, pipeline, "a", http_port=port, http_host="127.0.0.1")
    try:
        wait_http(port, "/readyz")
    except AssertionError:
        instance.kill()
        raise
    revoked = ("TOPIC", pipeline.topics.changelog, "WRITE")
    revoke(sasl, [revoked])
    deliveries = samples.events(samples.DELIVERIES_FILE, DELIVERY_EVENT)
    pipeline.produce_events(pipeline.topics.deliveries, DELIVERY_EVENT, deliveries)
    assert _ended(instance, tmp_path / "a.log")["error"] == _refusal(*revoked)


TOOL_MISSING = {  # tool -> its arguments and the permission removed, from the pipeline's names
    "produce": lambda p: (
        ["--topic", p.topics.deliveries, "--schema", DELIVERY_EVENT, str(samples.DELIVERIES_FILE)],
        ("TOPIC", p.topics.deliveries, "WRITE"),
    ),
    "kpis": lambda p: (["--topic", p.topics.kpis], ("TOPIC", p.topics.kpis, "READ")),
    "tail": lambda p: ([p.topics.kpis, "--as", "avro:delivery_kpi"], ("GROUP", "sendtrack-tail", "DESCRIBE")),
}


@pytest.mark.parametrize("tool", TOOL_MISSING)
def test_a_tool_without_one_permission_ends_naming_it(sasl: Secured, tmp_path: Path, tool: str) -> None:
    """A principal of its own: the readers' fixed groups would otherwise have their permissions from other tests."""
    source = f"{tmp_path.name}.kumomta"
    pipeline = _pipeline(sasl, tmp_path, source)
    args, removed = TOOL_MISSING[tool](pipeline)
    grant(sasl, [acl for acl in tool_acls(pipeline, source)[tool] if acl != removed], TOOL_USER)
    tools = sasl.but(sasl_username=TOOL_USER)
    code, stdout, stderr = outcome(sendtrack(tool, "--bootstrap-servers", sasl.bootstrap, *args, env=tools.env))
    assert (code, stdout, stderr) == (CANNOT_RUN, "", f"sendtrack {tool}: {_refusal(*removed)}\n")


# -- the quarantine tool ------------------------------------------------------------------------------------------
QUARANTINED = "held@example.com"
SIGNAL_CODEC = AvroCodec.named(ADDRESS_SIGNAL)


def _quarantine_topics(kafka: Secured, workdir: Path) -> tuple[str, str]:
    """address.signals and address.quarantine of their own, with one address's status on its partition."""
    signals, statuses = f"{workdir.name}.address.signals", f"{workdir.name}.address.quarantine"
    admin = AdminClient({"bootstrap.servers": kafka.broker.setup_servers})
    for created in admin.create_topics([NewTopic(signals, 2, 1), NewTopic(statuses, 2, 1)]).values():
        created.result()
    record = {"address": QUARANTINED, "status": "QUARANTINED", "error_count": 0, "reason": "user_unknown",
              "since": 1, "rule": "HARD_ERROR", "decided_by": None, "next_change_at": None, "updated_at": 1,
              "history": []}  # fmt: skip
    producer = Producer({"bootstrap.servers": kafka.broker.setup_servers})
    key = QUARANTINED.encode()
    producer.produce(statuses, AvroCodec.named(ADDRESS_STATUS).encode(record), key, partition_of(key, 2, "consistent"))
    assert producer.flush(10) == 0
    return signals, statuses


def quarantine_acls(signals: str, statuses: str) -> dict[str, list[Acl]]:
    """The README's rows for `sendtrack quarantine`."""
    show = [("TOPIC", statuses, "READ"), ("TOPIC", signals, "DESCRIBE"), ("GROUP", QUARANTINE_READER, "DESCRIBE")]
    return {"show": show, "release": [("TOPIC", signals, "WRITE"), *show]}  # release with --wait


def _quarantine(kafka: Secured, signals: str, statuses: str, *args: str) -> tuple[int, str, str]:
    action, *rest = args
    topics = ["--topic-address-signals", signals, "--topic-address-quarantine", statuses]
    tools = kafka.but(sasl_username=TOOL_USER)
    return outcome(
        sendtrack("quarantine", action, "--bootstrap-servers", kafka.bootstrap, *topics, *rest, env=tools.env)
    )


def test_the_quarantine_tool_with_exactly_its_readme_acls(sasl: Secured, tmp_path: Path) -> None:
    signals, statuses = _quarantine_topics(sasl, tmp_path)
    grant(sasl, [acl for acls in quarantine_acls(signals, statuses).values() for acl in acls], TOOL_USER)
    code, stdout, stderr = _quarantine(sasl, signals, statuses, "show", QUARANTINED, "--json")
    assert (code, json.loads(stdout)["status"]) == (0, "QUARANTINED"), stderr
    code, _, stderr = _quarantine(sasl, signals, statuses, "release", QUARANTINED, "--actor", "ops", "--wait", "1")
    assert code == NOT_APPLIED, stderr  # written, read on to the end of the wait (no stage runs here)
    _assert_no_secret([stdout, stderr])


QUARANTINE_MISSING = {  # action -> the permission removed
    "show": lambda signals, statuses: ("TOPIC", statuses, "READ"),
    "show placing the address": lambda signals, statuses: ("TOPIC", signals, "DESCRIBE"),
    "release": lambda signals, statuses: ("TOPIC", signals, "WRITE"),
}


@pytest.mark.parametrize("case", QUARANTINE_MISSING)
def test_the_quarantine_tool_without_one_permission_ends_naming_it(sasl: Secured, tmp_path: Path, case: str) -> None:
    signals, statuses = _quarantine_topics(sasl, tmp_path)
    action = case.split()[0]
    removed = QUARANTINE_MISSING[case](signals, statuses)
    grant(sasl, [acl for acl in quarantine_acls(signals, statuses)[action] if acl != removed], TOOL_USER)
    actor = ["--actor", "ops"] if action == "release" else []
    code, stdout, stderr = _quarantine(sasl, signals, statuses, action, QUARANTINED, *actor)
    assert (code, stdout, stderr) == (CANNOT_RUN, "", f"sendtrack quarantine: {_refusal(*removed)}\n")


# -- run --quarantine ----------------------------------------------------------------------------------------------
ADDRESS_EVENTS = {  # the MTA event each address has, and the status the quarantine stage gives it
    "hard@example.com": (("HARD_BOUNCE", "user_unknown"), "QUARANTINED"),
    "reader@example.com": (("DELIVERED", None), "VALID"),
    "angry@example.com": (("COMPLAINT", None), "DENYLISTED"),
}


def _with_addresses(kafka: Secured, workdir: Path) -> Pipeline:
    """A pipeline with the quarantine's topics, and a delivery whose MTA events name the addresses."""
    pipeline = _pipeline(kafka, workdir)
    ensure_topics(AdminClient({"bootstrap.servers": kafka.broker.setup_servers}), pipeline.topics, 4, quarantine=True)
    now = int(time.time() * 1000)
    delivery = prepared("d1", efs=False, validity_end=now + 3_600_000, at=now - 9_000)
    pipeline.produce_events(pipeline.topics.deliveries, DELIVERY_EVENT, [delivery])
    events = [
        mta("d1", f"m{n}", kind, at=now - 5_000, reason=reason, address=address)
        for n, (address, ((kind, reason), _)) in enumerate(ADDRESS_EVENTS.items())
    ]
    pipeline.produce_events(pipeline.topics.mta_events, MTA_EVENT, events)
    return pipeline


def _quarantine_partitions_owned(ports: Iterable[int], wanted: int, timeout_s: float = 30.0) -> float:
    """The quarantine partitions the instances own between them, once all `wanted` are (or at the deadline): a
    rebalance still settling (the second instance joined while the first was already working) owns fewer."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = [http_get(port, "/metrics")[1].decode() for port in ports]
        owned = [re.search(r'sendtrack_assigned_partitions\{stage="quarantine"\} (\S+)', m) for m in metrics]
        total = sum(float(found.group(1)) for found in owned if found)
        if total == wanted or time.monotonic() > deadline:
            return total
        time.sleep(0.5)


def test_run_quarantine_with_exactly_the_readme_acls(sasl: Secured, tmp_path: Path) -> None:
    """Two instances, both stages: the delivery stage's signals reach the quarantine stage, whose statuses reach
    address.quarantine; the view's address page, asked of the owner and of the other instance (which looks the owner
    up in the quarantine's group), and its Release need no row of their own."""
    pipeline = _with_addresses(sasl, tmp_path)
    grant(
        sasl,
        [acl for name in "ab" for acl in run_acls(pipeline, name, view=True) + quarantine_run_acls(pipeline, name)],
    )
    web = tmp_path / "web.yml"
    password = bcrypt.hashpw(b"view-password", bcrypt.gensalt(4)).decode()
    roles = "[view_addresses, release_addresses]"
    web.write_text(f"basic_auth_users: {{alice: '{password}'}}\nsendtrack_roles: {{alice: {roles}}}\n")
    ports = {name: free_port() for name in "ab"}
    instances = [
        _start(sasl, pipeline, name, quarantine=True, http_port=port, http_host="127.0.0.1", web_config=web,
               advertised_url=f"http://127.0.0.1:{port}")
        for name, port in ports.items()
    ]  # fmt: skip
    try:
        expected = {address: status for address, (_, status) in ADDRESS_EVENTS.items()}
        assert _wait_for_statuses(pipeline, expected, instances) == expected
        held = json.dumps({"address": "Hard@Example.com"}).encode()
        for port in ports.values():  # one of them owns the address's partition, the other asks it
            assert _address_record(port, held)["status"] == "QUARANTINED"
        _view(ports["b"], "/api/addresses/release", held)
        released = expected | {"hard@example.com": "VALID"}
        assert _wait_for_statuses(pipeline, released, instances) == released
        assert _quarantine_partitions_owned(ports.values(), pipeline.partitions) == pipeline.partitions
        metrics = [http_get(port, "/metrics")[1].decode() for port in ports.values()]
        for instance in instances:
            assert stop(instance) == 0
    finally:
        for instance in instances:
            instance.kill()
    logs = [(tmp_path / f"{name}.log").read_text() for name in ports]
    _assert_no_secret([*metrics, *logs])
    assert not [a for a in ADDRESS_EVENTS for log in logs if a in log.lower()]  # logs name addresses by a hash


def _wait_for_statuses(
    pipeline: Pipeline, expected: dict[str, str], running: list[subprocess.Popen[bytes]]
) -> dict[str, str]:
    """address.quarantine's latest status per address, once it is `expected` or KPI_TIMEOUT_S passed."""
    deadline = time.monotonic() + KPI_TIMEOUT_S
    while True:
        seen = {address: record["status"] for address, record in published(pipeline).items() if record is not None}
        if seen == expected or time.monotonic() > deadline:
            return seen
        assert all(instance.poll() is None for instance in running), "an instance ended"
        time.sleep(0.5)


def _address_record(port: int, body: bytes) -> dict[str, Any]:
    """The view's record of an address, once it has one: while a new member's place in the quarantine's group is
    not known yet, an instance that does not own the address answers 503."""
    from urllib.error import HTTPError

    deadline = time.monotonic() + 30
    while True:
        try:
            return _view(port, "/api/addresses/status", body)
        except HTTPError as error:
            if error.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


QUARANTINE_RUN_MISSING = {  # what is removed, from the pipeline's names and the instance's id
    "write of the signals": lambda p, i: ("TOPIC", p.topics.address_signals, "WRITE"),
    "read of the signals": lambda p, i: ("TOPIC", p.topics.address_signals, "READ"),
    "write of the statuses": lambda p, i: ("TOPIC", p.topics.address_quarantine, "WRITE"),
    "read of its changelog": lambda p, i: ("TOPIC", p.topics.quarantine_changelog, "READ"),
    "write of its changelog": lambda p, i: ("TOPIC", p.topics.quarantine_changelog, "WRITE"),
    "its group": lambda p, i: ("GROUP", f"{p.group}.quarantine", "READ"),
    "its restore reader's group": lambda p, i: ("GROUP", f"{p.group}.quarantine.restore", "DESCRIBE"),
    "its transactional id": lambda p, i: ("TRANSACTIONAL_ID", f"{p.group}.quarantine-{i}", "WRITE"),
}


@pytest.mark.parametrize("missing", QUARANTINE_RUN_MISSING)
def test_run_quarantine_without_one_permission_ends_naming_it(sasl: Secured, tmp_path: Path, missing: str) -> None:
    pipeline = _with_addresses(sasl, tmp_path)
    kind, name, operation = removed = QUARANTINE_RUN_MISSING[missing](pipeline, "a")
    grant(sasl, [acl for acl in run_acls(pipeline, "a") + quarantine_run_acls(pipeline, "a") if acl != removed])
    event = _ended(_start(sasl, pipeline, "a", quarantine=True), tmp_path / "a.log", within_s=30)
    assert event["error"] == _refusal(kind, name, operation)


def test_a_permission_revoked_from_the_quarantine_stage_ends_the_instance_naming_it(
    sasl: Secured, tmp_path: Path
) -> None:
    """The quarantine stage's transaction refused (AddPartitionsToTxn names no record) is named, never retried."""
    pipeline = _pipeline(sasl, tmp_path)
    ensure_topics(AdminClient({"bootstrap.servers": sasl.broker.setup_servers}), pipeline.topics, 4, quarantine=True)
    grant(sasl, run_acls(pipeline, "a") + quarantine_run_acls(pipeline, "a"))
    port = free_port()
    instance = _start(sasl, pipeline, "a", quarantine=True, http_port=port, http_host="127.0.0.1")
    try:
        wait_http(port, "/readyz")
    except AssertionError:
        instance.kill()
        raise
    revoked = ("TOPIC", pipeline.topics.address_quarantine, "WRITE")
    revoke(sasl, [revoked])
    signal = {"event_id": "e1", "address": QUARANTINED, "kind": "HARD_ERROR", "occurred_at": int(time.time() * 1000),
              "delivery_id": "d1", "message_id": "m1", "reason": "user_unknown", "actor": None}  # fmt: skip
    pipeline.produce_raw(pipeline.topics.address_signals, QUARANTINED.encode(), SIGNAL_CODEC.encode(signal))
    assert _ended(instance, tmp_path / "a.log")["error"] == _refusal(*revoked)
