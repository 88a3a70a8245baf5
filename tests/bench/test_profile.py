"""Summaries of the bench's py-spy recordings (bench/profile.py) and of its before/after rounds (bench/run.py)."""

from __future__ import annotations

import pytest

from bench import profile, run


def test_shares_on_their_own_and_with_what_they_call(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "main (/work/main/consumer/cli/main.py:10);decode (/x/site-packages/fastavro/read.py:3) 6\n"
        "main (/work/main/consumer/cli/main.py:10);apply (/work/main/consumer/core/processor.py:7) 3\n"
        "main (/work/main/consumer/cli/main.py:11) 1\n"
    )
    summary = profile.summarise(raw, seconds=0.1)
    assert summary["samples"] == 10
    assert summary["busy_share"] == pytest.approx(10 / (profile.RATE_HZ * 0.1))
    assert summary["self"][0] == ("decode (fastavro/read.py)", 0.6)  # lines merged, paths shortened
    assert dict(summary["self"])["main (consumer/cli/main.py)"] == pytest.approx(0.1)
    # main is in every sample: it says nothing about where the time goes, so inclusive leaves it out
    assert dict(summary["inclusive"]) == {"decode (fastavro/read.py)": 0.6, "apply (consumer/core/processor.py)": 0.3}


def test_before_after_rounds_give_their_ratios_and_medians():
    def scenario(rate: float, cpu: float) -> dict:
        return {"events_per_s": rate, "events": 1_000, "cpu_seconds": cpu}

    rounds = [
        {"limit": scenario(100, 1), "before": scenario(50, 1), "after": scenario(60, 0.5)},
        {"limit": scenario(100, 1), "before": scenario(60, 1), "after": scenario(90, 0.5)},
    ]
    lines = run._compare_lines({"baseline": "../before", "baseline_commit": "abc1234", "rounds": rounds})
    assert lines[-3] == "| 1 | 100 | 50; 1,000 | 60; 2,000 | 0.50 | 0.60 | 1.20 |"
    assert lines[-1] == "| median | | | | 0.55 | 0.75 | 1.35 |"  # of two rounds: the mean of both
