from __future__ import annotations

from bench import classifier


def test_the_benchmark_runs_and_returns_its_figures(capsys):
    result = classifier.main(["--n", "300", "--repeat", "1"])
    rates = [result[key] for key in ("classify_cold_per_s", "classify_no_cache_per_s", "classify_warm_per_s")]
    assert all(rate > 0 for rate in rates)
    assert result["kumomta_map_per_s"] > 0
    assert "classify_cold" in capsys.readouterr().out
