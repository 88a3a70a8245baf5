"""The deploy/ files agree with the code: metric names exist, probes and settings are the service's own."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from consumer.ops.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count")}


def exported_names() -> set[str]:
    names = set()
    for line in generate_latest(Metrics().registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()  # counters are typed with their _total name already
            names |= {name + suffix for suffix in _SUFFIXES.get(kind, ("",))}
    return names


def used_names() -> set[str]:
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    text += (DEPLOY / "grafana" / "dashboards" / "sendtrack.json").read_text()
    return set(re.findall(r"sendtrack_[a-z_]+", text))


def test_alerts_and_dashboard_use_only_metrics_the_service_exports():
    used = used_names()
    assert len(used) >= 8
    assert used <= exported_names(), used - exported_names()
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sendtrack.json").read_text())
    assert all(panel["targets"][0]["expr"] for panel in dashboard["panels"])


def test_kubernetes_and_compose_run_the_service_as_it_expects():
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sendtrack.yaml").read_text()))
    [statefulset] = [d for d in documents if d["kind"] == "StatefulSet"]
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert {"SENDTRACK_BOOTSTRAP_SERVERS", "SENDTRACK_INSTANCE_ID"} <= set(env)
    assert env["SENDTRACK_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(env["SENDTRACK_GRACE_PERIOD"]["value"])

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    instances = [s for name, s in compose["services"].items() if name.startswith("sendtrack")]
    assert len(instances) == 2
    ids = {s["environment"]["SENDTRACK_INSTANCE_ID"] for s in instances}
    assert len(ids) == 2 and all(s["environment"]["SENDTRACK_BOOTSTRAP_SERVERS"] for s in instances)


def test_prometheus_config_and_rules_are_valid():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (.ci/run does)")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        checked = subprocess.run([promtool, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
