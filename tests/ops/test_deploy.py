"""deploy/ agrees with the code: promtool accepts the Prometheus files, every metric an alert or a panel queries is
one the service exports, and the compose and Kubernetes manifests configure the service the way it reads its flags."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from consumer.cli.options import env_name
from consumer.cli.run import add_run_flags
from consumer.kafka.topics import Topics
from consumer.ops.metrics import Metrics
from consumer.quarantine.privacy import KEY_VARIABLE as ADDRESS_HASH_KEY
from tests.ops.deploy_files import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    METRIC,
    PROMETHEUS,
    SELECTOR,
    alert_rules,
    dashboard,
    dashboard_exprs,
    dashboard_variables,
    interpolate,
    promtool,
    scrape_job,
)

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


# -- promtool ------------------------------------------------------------------------------------------------
def test_promtool_accepts_the_prometheus_config_and_its_rule_file():
    output = promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert "1 rule files found" in output  # alerts.yml, resolved next to prometheus.yml


def test_promtool_accepts_the_alerting_rules():
    promtool("check", "rules", ALERTS)


def test_alerting_rules_pass_their_promtool_unit_tests():
    promtool("test", "rules", PROMETHEUS / "alerts.test.yml")


def test_dashboard_queries_are_valid_promql(tmp_path: Path):
    # promtool has no PromQL linter of its own: wrap every panel query in a recording rule and check those.
    exprs = [interpolate(expr, rate_interval="1m") for expr in dashboard_exprs()]
    rules = {
        "groups": [{"name": "dashboard", "rules": [{"record": f"panel:{i}", "expr": e} for i, e in enumerate(exprs)]}]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool("check", "rules", path)


# -- metric names --------------------------------------------------------------------------------------------
def exported_names() -> set[str]:
    """Every series name a scrape of a fresh instance can show, also for labelled metrics that have no child yet."""
    names = set()
    for line in generate_latest(Metrics().registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            stem = name.removesuffix("_total") if kind == "counter" else name
            names |= {stem + suffix for suffix in _SUFFIXES.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_exported_names_follow_the_client_naming():
    names = exported_names()
    assert {"sendtrack_events_total", "sendtrack_consumer_lag", "sendtrack_batch_processing_seconds_bucket"} <= names
    assert "sendtrack_events" not in names and "sendtrack_batch_processing_seconds" not in names


@pytest.mark.parametrize("path", [ALERTS, PROMETHEUS / "alerts.test.yml", DASHBOARD], ids=lambda p: p.name)
def test_every_queried_metric_is_exported(path: Path):
    used = set(METRIC.findall(path.read_text()))
    assert used, f"no sendtrack_ metric in {path}"
    unknown = used - exported_names()
    assert not unknown, f"{path.name} queries metrics the service does not export: {sorted(unknown)}"


def test_alerts_cover_what_operators_must_hear_about():
    used = " ".join(alert_rules().values())
    for needed in (
        "sendtrack_consumer_lag",
        "sendtrack_dlq_records_total",
        "sendtrack_checkpoint_failures_total",
        "sendtrack_compute_stats_mismatches_total",
        "sendtrack_assigned_partitions",
        "sendtrack_batch_processing_seconds_bucket",
        'up{job="sendtrack"}',
        "sendtrack_quarantine_transitions_total",
        "sendtrack_quarantine_signals_total",
    ):
        assert needed in used, needed


def test_dashboard_shows_the_service_at_a_glance():
    used = set(METRIC.findall(" ".join(dashboard_exprs())))
    assert {
        "sendtrack_events_total",
        "sendtrack_status_transitions_total",
        "sendtrack_consumer_lag",
        "sendtrack_dlq_records_total",
        "sendtrack_checkpoint_seconds_bucket",
        "sendtrack_batch_processing_seconds_bucket",
        "sendtrack_assigned_partitions",
        "sendtrack_kpi_records_published_total",
        "sendtrack_state_restore_seconds_sum",
        "sendtrack_quarantine_addresses",
        "sendtrack_quarantine_transitions_total",
        "sendtrack_address_signals_total",
        "sendtrack_quarantine_signals_total",
        "sendtrack_quarantine_records_published_total",
    } <= used
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uids = {source["uid"] for source in datasource["datasources"]}
    panels = dashboard()["panels"]
    assert {panel["datasource"]["uid"] for panel in panels} <= uids
    assert len({panel["id"] for panel in panels}) == len(panels)
    queried = [variable for variable in dashboard_variables().values() if variable["type"] == "query"]
    assert {variable["datasource"]["uid"] for variable in queried} <= uids


def test_dashboard_shows_the_quarantine_stage_lag_on_its_input_topic():
    """consumer_lag has a topic, not a stage: the quarantine stage's is its input's, address.signals by default."""
    [lag] = [panel for panel in dashboard()["panels"] if panel["title"].startswith("Quarantine stage: lag")]
    [target] = lag["targets"]
    assert 'topic="$signals_topic"' in target["expr"] and "sendtrack_consumer_lag" in target["expr"]
    assert dashboard_variables()["signals_topic"]["query"] == Topics().address_signals


def test_dashboard_filters_every_series_by_its_job_and_instance_variables():
    variables = dashboard_variables()
    assert {"job", "instance"} <= variables.keys()
    assert "$job" in variables["instance"]["definition"]  # the instances of the chosen job
    assert variables["instance"]["includeAll"] and variables["instance"]["multi"]
    for expr in dashboard_exprs():
        for metric, matchers in SELECTOR.findall(expr):
            assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, f"{metric} unfiltered in {expr}"


# -- compose and Kubernetes ----------------------------------------------------------------------------------
def run_flag_env_names() -> set[str]:
    parser = argparse.ArgumentParser()
    add_run_flags(parser, bootstrap_required=False)
    return {env_name(flag) for action in parser._actions for flag in action.option_strings if flag.startswith("--")}


def check_sendtrack_env(env: dict[str, Any]) -> None:
    assert env.get("SENDTRACK_BOOTSTRAP_SERVERS"), "SENDTRACK_BOOTSTRAP_SERVERS is required"
    known = run_flag_env_names() | {ADDRESS_HASH_KEY}  # the hash key: the environment only, never a flag
    for name in env:
        if name.startswith("SENDTRACK_KAFKA_"):
            # passed through to librdkafka; only security settings are accepted
            assert name.removeprefix("SENDTRACK_KAFKA_").lower().startswith(("security_protocol", "sasl_", "ssl_"))
        else:
            assert name in known, f"{name} is not a `sendtrack run` flag"


def as_env(environment: dict[str, Any] | list[str]) -> dict[str, Any]:
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return environment


def test_compose_runs_two_instances_of_one_group_against_a_transaction_ready_broker():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    instances = {
        name: service
        for name, service in services.items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }
    assert len(instances) == 2
    envs = {name: as_env(service["environment"]) for name, service in instances.items()}
    for env in envs.values():
        check_sendtrack_env(env)
    assert len({env["SENDTRACK_INSTANCE_ID"] for env in envs.values()}) == 2
    assert len({env.get("SENDTRACK_GROUP_ID", "sendtrack") for env in envs.values()}) == 1
    creators = [name for name, service in instances.items() if "--create-topics" in service.get("command", [])]
    assert len(creators) == 1
    command = instances[creators[0]]["command"]
    assert command[command.index("--partitions") + 1] == "8"
    for name, service in instances.items():
        grace = float(envs[name].get("SENDTRACK_GRACE_PERIOD", 30))
        assert float(service["stop_grace_period"].removesuffix("s")) > grace

    kafka = as_env(services["kafka"]["environment"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for setting in ("OFFSETS_TOPIC_REPLICATION_FACTOR", "TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert kafka[f"KAFKA_{setting}"] == "1"
    assert kafka["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert all(
        env["SENDTRACK_BOOTSTRAP_SERVERS"] == kafka["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
        for env in envs.values()
    )

    targets = {target for static in scrape_job()["static_configs"] for target in static["targets"]}
    assert targets == {f"{name}:8080" for name in instances}


def test_image_health_check_uses_healthz():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    healthcheck = next(
        line for line in dockerfile.splitlines() if line.lstrip().startswith("CMD") and "urlopen" in line
    )
    assert "/healthz" in healthcheck
    assert 'ENTRYPOINT ["sendtrack"]' in dockerfile and 'CMD ["run"]' in dockerfile


def test_kubernetes_statefulset_gives_stable_ids_state_volumes_and_probes():
    documents = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "sendtrack.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in documents}
    statefulset, service = kinds["StatefulSet"], kinds["Service"]
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]

    pod = statefulset["spec"]["template"]
    [container] = pod["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    check_sendtrack_env({name: item.get("value") or item.get("valueFrom") for name, item in env.items()})
    assert env["SENDTRACK_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["SENDTRACK_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"]

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(env["SENDTRACK_GRACE_PERIOD"]["value"])

    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["SENDTRACK_STATE_DIR"]["value"]

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert int(annotations["prometheus.io/port"]) == ports["http"] == int(env["SENDTRACK_HTTP_PORT"]["value"])


def switched_on(path: Path, first: str) -> str:
    """The manifest with its commented-out settings that begin at the comment `# <first>` uncommented: the comment
    lines from there to the next line that is not a comment."""
    lines = path.read_text().splitlines(keepends=True)
    [start] = [i for i, line in enumerate(lines) if line.strip() == f"# {first}"]
    end = next(i for i in range(start, len(lines)) if not lines[i].lstrip().startswith("#"))
    lines[start:end] = [re.sub(r"^(\s*)# ", r"\1", line) for line in lines[start:end]]
    return "".join(lines)


def quarantine_is_on(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> bool:
    """What `sendtrack run` makes of SENDTRACK_QUARANTINE in this environment."""
    monkeypatch.setenv("SENDTRACK_QUARANTINE", env["SENDTRACK_QUARANTINE"])
    parser = argparse.ArgumentParser()
    add_run_flags(parser, bootstrap_required=False)
    return parser.parse_args([]).quarantine


def test_compose_switches_the_quarantine_on_by_its_commented_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    compose = yaml.safe_load(COMPOSE.read_text())
    assert "SENDTRACK_QUARANTINE" not in compose["x-sendtrack-env"]  # off unless asked
    switched = tmp_path / COMPOSE.name
    switched.write_text(switched_on(COMPOSE, 'SENDTRACK_QUARANTINE: "true"'))
    done = validate_compose(switched)
    assert done.returncode == 0, done.stdout + done.stderr
    services = yaml.safe_load(switched.read_text())["services"]
    for name in ("sendtrack-a", "sendtrack-b"):
        env = as_env(services[name]["environment"])
        check_sendtrack_env(env)
        assert ADDRESS_HASH_KEY in env and quarantine_is_on(env, monkeypatch), name


def test_kubernetes_switches_the_quarantine_on_by_its_commented_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def env_of(text: str) -> dict[str, dict[str, Any]]:
        [statefulset] = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "StatefulSet"]
        [container] = statefulset["spec"]["template"]["spec"]["containers"]
        return {item["name"]: item for item in container["env"]}

    assert "SENDTRACK_QUARANTINE" not in env_of(KUBERNETES.read_text())  # off unless asked
    switched = tmp_path / KUBERNETES.name
    switched.write_text(switched_on(KUBERNETES, "- name: SENDTRACK_QUARANTINE"))
    done = validate_kubernetes(switched)
    assert done.returncode == 0, done.stdout + done.stderr
    env = env_of(switched.read_text())
    check_sendtrack_env({name: item.get("value") or item.get("valueFrom") for name, item in env.items()})
    assert env[ADDRESS_HASH_KEY]["valueFrom"]["secretKeyRef"]["key"]  # a secret, never in the manifest
    assert quarantine_is_on({"SENDTRACK_QUARANTINE": env["SENDTRACK_QUARANTINE"]["value"]}, monkeypatch)


# -- schemas: the Kubernetes API's and the compose specification's, bundled with the validators (offline) ---------
def validate(tool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", tool, *map(str, args)], capture_output=True, text=True, timeout=120)


def validate_kubernetes(path: Path) -> subprocess.CompletedProcess[str]:
    # --strict: a misspelt or misplaced field is an error, not silently ignored as the API server would
    return validate("kubernetes_validate", "--strict", "--quiet", path)


def validate_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return validate("check_jsonschema", "--builtin-schema", "vendor.compose-spec", path)


KUBERNETES = DEPLOY / "kubernetes" / "sendtrack.yaml"
COMPOSE = DEPLOY / "compose.yaml"


@pytest.mark.parametrize(
    ("check", "path", "typo"),
    [
        (validate_kubernetes, KUBERNETES, ("  replicas:", "  replica:")),
        (validate_compose, COMPOSE, ("stop_grace_period:", "stop_grace_perod:")),
    ],
    ids=["kubernetes", "compose"],
)
def test_manifests_validate_against_their_schemas(
    check: Callable[[Path], subprocess.CompletedProcess[str]], path: Path, typo: tuple[str, str], tmp_path: Path
):
    done = check(path)
    assert done.returncode == 0, f"{path.name} does not validate:\n{done.stdout}{done.stderr}"
    # The validator is not a no-op: the same file with a misspelt field fails.
    broken = tmp_path / path.name
    broken.write_text(path.read_text().replace(*typo))
    assert broken.read_text() != path.read_text()
    assert check(broken).returncode != 0
