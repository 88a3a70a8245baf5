"""What deploy/ ships, read the way promtool, Prometheus and Grafana read it (shared by the tests in tests/ops)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sendtrack.json"
METRIC = re.compile(r"\bsendtrack_[a-z_]+")
# The series a query selects, with its label matchers if it has any.
SELECTOR = re.compile(r"\b(sendtrack_[a-z_]+)(\{[^}]*\})?")
_VARIABLE = re.compile(r"\$(\w+)")


def promtool(*args: str | Path) -> str:
    binary = shutil.which("promtool")
    if binary is None:  # CI installs it: a missing promtool is a broken environment, not a reason to skip
        pytest.fail("promtool not found: apt-get install -y prometheus (Debian/Ubuntu) or put promtool on PATH")
    done = subprocess.run([binary, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def alert_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(ALERTS.read_text())["groups"]


def alert_rules() -> dict[str, str]:
    return {rule["alert"]: rule["expr"] for group in alert_groups() for rule in group["rules"]}


def scrape_job() -> dict[str, Any]:
    """The sendtrack scrape job of deploy/prometheus/prometheus.yml (its job_name is the one the alerts match)."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    [job] = [job for job in config["scrape_configs"] if job["job_name"] == "sendtrack"]
    return job


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs(title_prefixes: tuple[str, ...] = ("",)) -> list[str]:
    """The queries of the panels whose titles begin so (every panel's by default)."""
    panels = [panel for panel in dashboard()["panels"] if panel["title"].startswith(title_prefixes)]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def dashboard_variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard()["templating"]["list"]}


def interpolate(expr: str, rate_interval: str, **texts: str) -> str:
    """The query Grafana sends with the variables at their defaults (the compose job, all instances, a text
    variable's own default unless given in `texts`)."""
    defaults = {name: v["query"] for name, v in dashboard_variables().items() if v["type"] == "textbox"}
    values = {**defaults, **texts, "__rate_interval": rate_interval, "job": scrape_job()["job_name"], "instance": ".+"}
    unknown = set(_VARIABLE.findall(expr)) - values.keys()
    assert not unknown, f"{expr} uses variables the dashboard does not define: {sorted(unknown)}"
    return _VARIABLE.sub(lambda match: values[match.group(1)], expr)
