"""One machine's workers seen as one instance: what the `--workers` parent serves on the configured port, made from
what each worker serves on its own loopback port.

/metrics: every worker's samples, each with a `worker` label (w0, w1, ...) added, under one HELP/TYPE per family.
Not summed: a restarted worker's counters start again from 0, and a sum would then go down, which Prometheus'
rate() reads as a reset of the whole sum (a spike of the other workers' totals); per-worker series reset alone
and rate() handles that. `sum without (worker)` gives the machine's figure, and a lagging or stuck worker stays
visible. /healthz and /readyz: 200 only when every worker answers 200, else the detail names each one that does not.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

ASK_TIMEOUT_S = 2.0  # a worker on this machine that does not answer within this is named, not waited for
WORKER_LABEL = "worker"


@dataclass(frozen=True)
class Target:
    """A worker as the parent reaches it: its name, and its loopback port (None while it starts or restarts)."""

    name: str
    port: int | None


Targets = Callable[[], Sequence[Target]]


def ask(port: int, path: str, timeout_s: float = ASK_TIMEOUT_S) -> tuple[int, bytes]:
    """GET a worker's path: (status, body); status 0 when it cannot be reached."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


class WorkerMetrics(Collector):
    """A collector that scrapes the workers when the parent is scraped (nothing is cached: always current)."""

    def __init__(self, targets: Targets) -> None:
        self._targets = targets

    def collect(self) -> Iterator[Metric]:
        texts = []
        for target in self._targets():
            status, body = ask(target.port, "/metrics") if target.port is not None else (0, b"")
            if status == 200:
                texts.append((target.name, body.decode()))
        yield from labelled(texts)


def labelled(texts: Sequence[tuple[str, str]]) -> list[Metric]:
    """The families of several workers' Prometheus texts merged by name, each sample labelled with its worker."""
    merged: dict[str, Metric] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text):
            into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            into.samples += [_with_worker(sample, worker) for sample in family.samples]
    return list(merged.values())


def _with_worker(sample: Sample, worker: str) -> Sample:
    return sample._replace(labels={**sample.labels, WORKER_LABEL: worker})


def all_of(targets: Sequence[Target], path: str) -> tuple[bool, str]:
    """Whether every worker answers `path` with 200, and each worker's detail; failing ones first, so they show."""
    answers = [_answer(target, path) for target in targets]
    failing = [f"{name}: {detail}" for name, ok, detail in answers if not ok]
    passing = [f"{name}: {detail}" for name, ok, detail in answers if ok]
    return not failing, "; ".join(failing + passing)


def _answer(target: Target, path: str) -> tuple[str, bool, str]:
    if target.port is None:
        return target.name, False, "starting"
    status, body = ask(target.port, path)
    if status == 0:
        return target.name, False, "not answering"
    return target.name, status == 200, _detail(body)


def _detail(body: bytes) -> str:
    try:
        answer: Any = json.loads(body)
        return str(answer.get("detail") or answer.get("error") or answer)
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:200]


def first_kpi(targets: Sequence[Target], delivery_id: str) -> dict[str, Any] | None:
    """/deliveries/<id> from the worker that owns the delivery (the others answer 404)."""
    quoted = urllib.request.quote(delivery_id, safe="")
    for target in targets:
        if target.port is not None:
            status, body = ask(target.port, f"/deliveries/{quoted}")
            if status == 200:
                return json.loads(body)
    return None
