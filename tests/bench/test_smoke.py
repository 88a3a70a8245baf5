"""CI runs the benchmark in a tiny configuration: it must finish with correct KPIs. No speed is asserted."""

from __future__ import annotations

import json

from bench import run


def test_benchmark_smoke_run_is_correct(kafka, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WORKDIR", str(tmp_path / "work"))
    code = run.main(
        [
            "--smoke",
            "--deliveries",
            "4",
            "--messages",
            "300",
            "--partitions",
            "4",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--out",
            str(tmp_path),
        ]
    )
    result = json.loads((tmp_path / "smoke.json").read_text())
    assert code == 0
    assert [r["correct"] for r in result["throughput"]] == [True, True]
    assert result["throughput"][1]["events"] == result["workload"]["events"] > 2_000
    assert "| sendtrack run: RocksDB, exactly-once (default) |" in (tmp_path / "smoke.md").read_text()
