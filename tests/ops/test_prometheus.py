"""deploy/prometheus on a real Prometheus server scraping two running instances: the series carry the values a known
input implies, the dead-letter and lag alerts fire when their conditions are made true, the dashboard's variables and
queries work on the live series, and every rule evaluates without error.

The rules are the shipped ones with each `for:` shortened to FOR, so that alerts fire within the test; the
expressions are left exactly as shipped."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from consumer.cli.workload import WorkloadSpec, generate
from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import MTA_EVENT
from consumer.kafka.admin import ensure_topics
from tests import samples
from tests.core.builders import mta
from tests.ops.deploy_files import (
    alert_groups,
    alert_rules,
    dashboard_exprs,
    dashboard_variables,
    interpolate,
    scrape_job,
)
from tests.runtime.harness import Pipeline, free_port, stop, wait_http

INTERVAL = "1s"  # scrape and rule evaluation
FOR = "2s"
RATE_INTERVAL = "5s"  # Grafana's $__rate_interval at a 1 s scrape interval
HELD_BACK = 10_000  # with the open transaction's own record, one above the lag alert's threshold
LAG_ALERT = "SendtrackConsumerLagHigh"
DLQ_ALERT = "SendtrackDeadLetters"
_LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")
T = TypeVar("T")


def eventually(check: Callable[[], T], timeout_s: float = 30.0) -> T:
    """check()'s result once its assertions pass; its last assertion error after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.25)


# -- the Prometheus server -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrometheusApi:
    port: int

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)["data"]
        except urllib.error.HTTPError as error:  # a bad query: not worth retrying, so not an AssertionError
            raise RuntimeError(f"{url}: {error.read().decode()}") from None

    def value(self, expr: str) -> float | None:
        """The value of a query that yields at most one series; None when it yields none."""
        result = self.get("query", query=expr)["result"]
        assert len(result) <= 1, f"{expr} yields {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """The active (pending or firing) alerts of one rule."""
        return [alert for alert in self.get("alerts")["alerts"] if alert["labels"]["alertname"] == name]

    def firing(self, name: str) -> dict[str, Any]:
        """The one firing alert of a rule (fails while there is none)."""
        alerts = self.alerts(name)
        assert [alert["state"] for alert in alerts] == ["firing"], f"{name}: {alerts}"
        return alerts[0]

    def label_values(self, grafana_query: str) -> list[str]:
        """What a Grafana `label_values(selector, label)` variable query lists."""
        match = _LABEL_VALUES.fullmatch(grafana_query)
        assert match, f"not a label_values() query: {grafana_query}"
        selector, label = match.groups()
        return self.get(f"label/{label}/values", **{"match[]": selector})


def shortened_rules() -> dict[str, Any]:
    groups = alert_groups()
    for group in groups:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
    return {"groups": groups}


@contextlib.contextmanager
def running_prometheus(workdir: Path, targets: list[str]) -> Iterator[PrometheusApi]:
    """Prometheus on loopback scraping `targets` as the shipped sendtrack job, with its own storage; always stopped."""
    binary = shutil.which("prometheus")
    if binary is None:  # CI installs it (.ci/run): a missing server is a broken environment, not a reason to skip
        pytest.fail("prometheus not found: apt-get install -y prometheus (Debian/Ubuntu) or put it on PATH")
    (workdir / "alerts.yml").write_text(yaml.safe_dump(shortened_rules()))
    config = {
        "global": {"scrape_interval": INTERVAL, "scrape_timeout": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [scrape_job() | {"static_configs": [{"targets": targets}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), workdir / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_http(port, "/-/ready", timeout_s=30)
        except AssertionError:
            raise AssertionError(f"prometheus did not start; its log ends:\n{log.read_text()[-3000:]}") from None
        yield PrometheusApi(port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- two instances and their Prometheus ------------------------------------------------------------------------
@dataclass(frozen=True)
class Stack:
    pipeline: Pipeline
    prometheus: PrometheusApi
    targets: list[str]  # the instances' scrape addresses: their `instance` label


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus")
    pipeline = Pipeline(kafka.bootstrap_servers, workdir)
    ensure_topics(AdminClient({"bootstrap.servers": kafka.bootstrap_servers}), pipeline.topics, 4, quarantine=True)
    ports = {"a": free_port(), "b": free_port()}
    with contextlib.ExitStack() as cleanup:  # unwinds in reverse: Prometheus first, then each instance
        for name, port in ports.items():
            cleanup.callback(stop, pipeline.start(name, http_port=port, quarantine=True))
        targets = [f"127.0.0.1:{port}" for port in ports.values()]
        prometheus = cleanup.enter_context(running_prometheus(workdir, targets))
        for port in ports.values():
            wait_http(port, "/readyz")
        yield Stack(pipeline, prometheus, targets)


# -- the tests, in the order they run: later ones see the series the earlier ones made --------------------------
def test_series_add_up_to_a_known_workload(stack: Stack):
    pipeline, prometheus = stack.pipeline, stack.prometheus
    workload = generate(WorkloadSpec.ending_now(deliveries=8, messages=100))  # its keys land on all 4 partitions
    pipeline.produce_workload(workload)
    topics = pipeline.topics
    expected = {
        'count(up{job="sendtrack"} == 1)': 2.0,
        'sum(sendtrack_assigned_partitions{stage="delivery"})': float(pipeline.partitions),
        'sum(sendtrack_assigned_partitions{stage="quarantine"})': float(pipeline.partitions),
        f'sum(sendtrack_events_total{{topic="{topics.deliveries}"}})': float(len(workload.delivery_events)),
        f'sum(sendtrack_events_total{{topic="{topics.mta_events}"}})': float(len(workload.mta_events)),
        "count(sum by (instance) (sendtrack_events_total) > 0)": 2.0,  # both instances took part
        "sum(sendtrack_dlq_records_total)": None,  # clean input: no dead-letter series at all
    }

    def series_match() -> None:
        assert {expr: prometheus.value(expr) for expr in expected} == expected

    eventually(series_match)

    # What the instances say they published is what the output topics hold.
    def outputs_match() -> None:
        for metric, topic in (
            ("sendtrack_kpi_records_published_total", topics.kpis),
            ("sendtrack_sending_log_records_published_total", topics.sending_logs),
        ):
            published = len(pipeline.read_all(topic))
            assert published >= len(workload.expected)
            assert prometheus.value(f"sum({metric})") == published, metric

    eventually(outputs_match)


def test_dead_letters_are_counted_and_fire_their_alert(stack: Stack):
    pipeline, prometheus = stack.pipeline, stack.prometheus
    assert not prometheus.alerts(DLQ_ALERT)
    for _ in range(3):
        pipeline.produce_raw(pipeline.topics.mta_events, b"some-delivery", b"not an Avro record")

    labels = eventually(lambda: prometheus.firing(DLQ_ALERT))["labels"]
    assert labels["reason"] == "decode_error" and labels["job"] == "sendtrack" and labels["instance"] in stack.targets

    def counted() -> None:
        assert prometheus.value('sum(sendtrack_dlq_records_total{reason="decode_error"})') == 3.0
        assert len(pipeline.read_all(pipeline.topics.dlq)) == 3

    eventually(counted)


def test_input_held_behind_an_open_transaction_fires_the_lag_alert(stack: Stack):
    """The instances read committed records only, so records behind an open transaction wait, unprocessed, for as
    long as it stays open: a hung upstream producer. They are lag when the partition's end is its log end (high
    watermark), as Kafka's own tools count it; an end at the last stable offset hides them, and this test fails."""
    pipeline, prometheus = stack.pipeline, stack.prometheus
    topic = pipeline.topics.mta_events
    assert not prometheus.alerts(LAG_ALERT)
    event = samples.events(samples.MTA_FILE, MTA_EVENT)[0]  # one key: everything lands on one partition
    transaction = Producer({"bootstrap.servers": pipeline.bootstrap, "transactional.id": f"{pipeline.name}-held"})
    transaction.init_transactions(30)
    transaction.begin_transaction()
    transaction.produce(topic, AvroCodec.named(MTA_EVENT).encode(event), event["delivery_id"].encode())
    assert transaction.flush(30) == 0
    pipeline.produce_events(topic, MTA_EVENT, [event] * HELD_BACK)  # duplicates: cheap once they can be read

    def held_back() -> None:
        series = prometheus.get("query", query=f'sendtrack_consumer_lag{{topic="{topic}"}}')["result"]
        lags = {s["metric"]["partition"]: float(s["value"][1]) for s in series}
        assert max(lags.values(), default=0.0) == HELD_BACK + 1, f"lag per partition of {topic}: {lags}"

    eventually(held_back)
    labels = eventually(lambda: prometheus.firing(LAG_ALERT))["labels"]
    assert labels["topic"] == topic and labels["instance"] in stack.targets

    transaction.commit_transaction(30)  # the records become readable, are processed, and the lag is gone

    def resolved() -> None:
        assert not prometheus.alerts(LAG_ALERT)

    eventually(resolved)


def test_quarantine_series_add_up_and_fill_its_panels(stack: Stack):
    """MTA events naming addresses: the signals the delivery stage published, what the quarantine stage applied and
    published, its statuses and its lag are the series the quarantine panels query."""
    pipeline, prometheus = stack.pipeline, stack.prometheus
    now = int(time.time() * 1000)
    events = [
        mta("q1", "m1", "HARD_BOUNCE", at=now - 5_000, reason="user_unknown", address="hard@example.com"),
        mta("q1", "m2", "DELIVERED", at=now - 5_000, address="reader@example.com"),
        mta("q1", "m3", "SOFT_BOUNCE", at=now - 5_000, reason="mailbox_full", address="full@example.com"),
        mta("q1", "m4", "COMPLAINT", at=now - 5_000, address="angry@example.com"),
    ]
    pipeline.produce_events(pipeline.topics.mta_events, MTA_EVENT, events)
    signals = {"HARD_ERROR": 1.0, "DELIVERED": 1.0, "SOFT_ERROR": 1.0, "COMPLAINT": 1.0}
    expected = {f'sum(sendtrack_address_signals_total{{kind="{kind}"}})': n for kind, n in signals.items()}
    expected |= {f'sum(sendtrack_quarantine_signals_total{{kind="{kind}", outcome="applied"}})': n
                 for kind, n in signals.items()}  # fmt: skip
    statuses = {"QUARANTINED": 1.0, "VALID": 1.0, "ERRONEOUS": 1.0, "DENYLISTED": 1.0}
    expected |= {f'sum(sendtrack_quarantine_addresses{{status="{status}"}})': n for status, n in statuses.items()}
    expected |= {f'sum(sendtrack_quarantine_transitions_total{{from_status="NONE", to_status="{status}"}})': n
                 for status, n in statuses.items()}  # fmt: skip
    signals_topic = pipeline.topics.address_signals
    expected[f'count(sendtrack_consumer_lag{{topic="{signals_topic}"}})'] = float(pipeline.partitions)

    def series_match() -> None:
        assert {expr: prometheus.value(expr) for expr in expected} == expected
        published = len(pipeline.read_all(pipeline.topics.address_quarantine))
        assert prometheus.value('sum(sendtrack_quarantine_records_published_total{record="status"})') == published

    eventually(series_match, timeout_s=60)

    def panels_filled() -> None:  # a rate needs two samples of a series in its window
        for expr in dashboard_exprs(("Quarantine", "Address signals")):
            query = interpolate(expr, RATE_INTERVAL, signals_topic=signals_topic)
            assert prometheus.get("query", query=query)["result"], f"{query} yields no series"

    eventually(panels_filled)


def test_dashboard_variables_and_queries_work_on_the_live_series(stack: Stack):
    prometheus = stack.prometheus
    variables = dashboard_variables()
    assert prometheus.label_values(variables["job"]["definition"]) == [scrape_job()["job_name"]]
    instances = interpolate(variables["instance"]["definition"], RATE_INTERVAL)
    assert prometheus.label_values(instances) == sorted(stack.targets)
    for expr in dashboard_exprs():
        prometheus.get("query", query=interpolate(expr, RATE_INTERVAL))  # raises on an error


def test_every_rule_evaluates_without_error(stack: Stack):
    def evaluated() -> list[dict[str, Any]]:
        rules = [rule for group in stack.prometheus.get("rules")["groups"] for rule in group["rules"]]
        assert rules and all(rule["health"] != "unknown" for rule in rules)
        return rules

    rules = eventually(evaluated)
    assert {rule["name"] for rule in rules} == set(alert_rules())
    failing = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok" or rule.get("lastError")}
    assert not failing
