"""The Deployment view with a year of deliveries: page bytes, render time and memory per delivery.

    python -m bench.view [--deliveries 100000] [--snapshots 1]

No broker: a KpiTable is filled with N complete KPI records (as the view's topic reader applies them; each delivery
`--snapshots` times, so its progress history holds that many points, at most progress.MAX_POINTS), then the list
page, its JSON page, a search, a rare-state filter and a delivery page are served through WebApp.handle. Memory is
what tracemalloc sees allocated by filling the table, divided by N. Times are the median of repeated calls,
process CPU on this machine as it is (shared): read them as orders of magnitude. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from consumer.kafka.topics import Topics
from consumer.ops.exchange import Request
from consumer.web.app import WebApp
from consumer.web.auth import Auth
from consumer.web.table import KpiTable
from tests.web.fakes import FakeOwnerState, FakePublisher, kpi

HTML = {"host": "bench", "accept": "text/html"}


def fill(deliveries: int, snapshots: int) -> KpiTable:
    table = KpiTable()
    start = 1_780_000_000_000
    for n in range(snapshots):
        for i in range(deliveries):
            state = "SENDING" if i % 1000 == 0 else "FINISHED"
            figures = {"processed": 1000 * n + i % 997, "sent": 900 * n + i % 991, "failed": i % 7 + n}
            record = kpi(f"campaign-{i:07}", state=state, version=n + 1, updated_at=start + n * 60_000 + i, **figures)
            table.apply(i % 8, record | {"failures_by_reason": {"user_unknown": i % 5, "mailbox_full": 2}})
    return table


def timed(call: Callable[[], Any], repeat: int = 15) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000, result


def measure(deliveries: int, snapshots: int) -> dict[str, Any]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    began = time.perf_counter()
    table = fill(deliveries, snapshots)
    fill_s = time.perf_counter() - began
    per_delivery = (tracemalloc.get_traced_memory()[0] - before) / deliveries
    tracemalloc.stop()
    owner = FakeOwnerState({0})
    app = WebApp(table, None, Auth(), FakePublisher(), owner, CollectorRegistry(), topics=Topics())
    figures: dict[str, Any] = {
        "deliveries": deliveries,
        "snapshots_per_delivery": snapshots,
        "history_points_per_delivery": len(table.history("campaign-0000001")),
        "memory_bytes_per_delivery": round(per_delivery),
        "fill_seconds": round(fill_s, 1),
    }
    cases = {
        "list_page": ("/", {}, HTML),
        "list_json": ("/api/deliveries", {}, {"host": "bench"}),
        "search_no_match": ("/", {"q": ["no-such-id"]}, HTML),
        "rare_state": ("/", {"state": ["SENDING"]}, HTML),
        "delivery_page": ("/deliveries/campaign-0000001", {}, HTML),
    }
    for name, (path, query, headers) in cases.items():
        ms, response = timed(lambda p=path, q=query, h=headers: app.handle(Request("GET", p, q, h, b"", "b:1", False)))
        figures[name] = {"status": response.status, "bytes": len(response.body), "ms": round(ms, 2)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--snapshots", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(measure(args.deliveries, args.snapshots), indent=2))


if __name__ == "__main__":
    main()
