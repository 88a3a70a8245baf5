"""`python -m bench.corpus`: the bounce classifier's figures on the corpus of real replies.

tests/ingest/corpus/replies.toml holds real SMTP replies with the type and reason the platform's definitions give
them. Figures: type accuracy (hard / soft / ignored), reason accuracy, and the share of replies from valid
addresses (expected soft or ignored) classified hard, the costly mistake. A fixed 30 % of the corpus, chosen by a
hash of the text, is held out: rules are written against the rest and the held-out part checks that they
generalise. Replies marked `fresh` were added after the rules were last adjusted to the held-out part's misses,
labelled before the classifier ran on them: the part no rule was written or fixed against (dev and held-out leave
them out). tests/ingest/corpus/fresh.toml is a second, larger fresh set ("fresh2") from sources the first did not
use, split in two halves by a hash of each text before any rule changed: "tune" (rules may be fixed against its
misses) and "check" (never read for fixes); both are reported. `--misses` lists what was classified wrong
(`--parts T` only the tune half's). `--sisimai` also runs the open peer Sisimai (Debian's
libsisimai-perl, through bench/sisimai_corpus.pl) on the same replies, its reasons mapped onto ours by SISIMAI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consumer.ingest.classifier import Classifier

CORPUS = Path(__file__).parents[1] / "tests" / "ingest" / "corpus" / "replies.toml"
# The second fresh set: replies from sources the first corpus did not use, labelled before the classifier ran on
# them. Its split into two halves is fixed by a hash of each text (Reply.fresh_half) before any rule is changed:
# rules may be fixed against "tune" only; "check" stays unseen and says whether the fixes generalise.
FRESH = CORPUS.with_name("fresh.toml")
SISIMAI_SCRIPT = Path(__file__).with_name("sisimai_corpus.pl")
HOLDOUT_PERCENT = 30

# Sisimai's reasons onto the platform's (consumer/ingest/README.md shows this table). "filtered" is Sisimai's
# rejection after DATA, in its own tests mostly of unknown users; "expired" gives no cause, so "unreachable".
SISIMAI = {
    "userunknown": "user_unknown",
    "filtered": "user_unknown",
    "hasmoved": "user_unknown",
    "hostunknown": "invalid_domain",
    "notaccept": "invalid_domain",
    "suspend": "account_disabled",
    "mailboxfull": "mailbox_full",
    "systemfull": "mailbox_full",
    "mesgtoobig": "text_too_long",
    "exceedlimit": "text_too_long",
    "blocked": "refused",
    "rejected": "refused",
    "policyviolation": "refused",
    "spamdetected": "refused",
    "securityerror": "refused",
    "norelaying": "refused",
    "virusdetected": "refused",
    "contenterror": "refused",
    "toomanyconn": "refused",
    "networkerror": "unreachable",
    "systemerror": "unreachable",
    "mailererror": "unreachable",
    "syntaxerror": "unreachable",
    "expired": "unreachable",
    "vacation": "error_ignored",
    "delivered": "error_ignored",
    "feedback": "error_ignored",
}
SISIMAI_KINDS = {1: "soft", 0: "hard", -1: "ignored"}


@dataclass(frozen=True, slots=True)
class Reply:
    family: str
    code: int | None
    enhanced: str | None
    text: str
    hint: str | None
    kind: str
    reason: str
    source: str
    fresh: bool = False  # added after the rules were last changed, labelled before they were run on it
    second: bool = False  # from FRESH: the second fresh set

    @property
    def fresh_half(self) -> str:
        """The second fresh set's half: "tune" (rules may be fixed against it) or "check" (never looked at for
        fixes), by the low bit of a salted hash of the text, so the split holds whatever the file order."""
        return (
            "check" if hashlib.blake2b(b"fresh-split:" + self.text.encode(), digest_size=1).digest()[0] & 1 else "tune"
        )

    @property
    def held_out(self) -> bool:
        """A stable 30 % of the corpus, whatever the file order: the first byte of a hash of the text."""
        return hashlib.blake2b(self.text.encode(), digest_size=1).digest()[0] * 100 < HOLDOUT_PERCENT * 256


@dataclass(frozen=True, slots=True)
class Figures:
    replies: int
    type_ok: int
    reason_ok: int
    valid: int  # replies expected soft or ignored: the address is fine
    valid_hard: int  # of those, classified hard

    @property
    def type_accuracy(self) -> float:
        return self.type_ok / self.replies if self.replies else 0.0

    @property
    def reason_accuracy(self) -> float:
        return self.reason_ok / self.replies if self.replies else 0.0

    @property
    def valid_hard_rate(self) -> float:
        return self.valid_hard / self.valid if self.valid else 0.0

    def line(self, name: str) -> str:
        return (
            f"{name:<10} {self.replies:>4} replies  type {self.type_accuracy:7.2%}  "
            f"reason {self.reason_accuracy:7.2%}  "
            f"valid classified hard {self.valid_hard_rate:6.2%} ({self.valid_hard}/{self.valid})"
        )


Verdict = tuple[str, str]  # (kind, reason)


def load(path: Path = CORPUS, fresh: Path | None = FRESH) -> list[Reply]:
    """The corpus, then the second fresh set (when there is one) marked `second`."""
    replies = [_reply(table) for table in tomllib.loads(path.read_text(encoding="utf-8"))["reply"]]
    if fresh is not None and fresh.exists():
        tables = tomllib.loads(fresh.read_text(encoding="utf-8")).get("reply", [])
        replies += [_reply(table, second=True) for table in tables]
    return replies


def _reply(table: dict[str, Any], second: bool = False) -> Reply:
    return Reply(
        family=table["family"],
        code=table.get("code"),
        enhanced=table.get("enhanced"),
        text=table["text"],
        hint=table.get("hint"),
        kind=table["kind"],
        reason=table["reason"],
        source=table["source"],
        fresh=table.get("fresh", False) or second,
        second=second,
    )


def figures(replies: Iterable[Reply], verdicts: Iterable[Verdict]) -> Figures:
    pairs = list(zip(replies, verdicts, strict=True))
    valid = [(r, v) for r, v in pairs if r.kind != "hard"]
    return Figures(
        replies=len(pairs),
        type_ok=sum(r.kind == v[0] for r, v in pairs),
        reason_ok=sum(r.reason == v[1] for r, v in pairs),
        valid=len(valid),
        valid_hard=sum(v[0] == "hard" for _, v in valid),
    )


def ours(classifier: Classifier) -> Callable[[Reply], Verdict]:
    def verdict(reply: Reply) -> Verdict:
        result = classifier.classify(reply.code, reply.enhanced, reply.text, reply.hint)
        return (result.kind, result.reason)

    return verdict


def sisimai(replies: Sequence[Reply]) -> list[Verdict]:
    """Sisimai's verdicts, one per reply; its own kind (soft_or_hard), its reason mapped by SISIMAI ("unknown" for
    onhold, undefined and anything unparsed)."""
    lines = "".join(json.dumps({"code": r.code, "enhanced": r.enhanced, "text": r.text}) + "\n" for r in replies)
    done = subprocess.run(["perl", str(SISIMAI_SCRIPT)], input=lines, capture_output=True, text=True, check=True)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    return [(SISIMAI_KINDS[a["soft"]], SISIMAI.get(a["reason"], "unknown")) for a in answers]


def split_figures(replies: Sequence[Reply], verdicts: Sequence[Verdict]) -> dict[str, Figures]:
    """Figures for the whole corpus, the part the rules were written against, the held-out part and the replies
    added after the rules were last changed."""
    parts: dict[str, Callable[[Reply], bool]] = {
        "all": lambda r: not r.second,
        "dev": lambda r: not r.held_out and not r.fresh,
        "held-out": lambda r: r.held_out and not r.fresh,
        "fresh": lambda r: r.fresh and not r.second,
        "fresh2": lambda r: r.second,
        "fresh2-tune": lambda r: r.second and r.fresh_half == "tune",
        "fresh2-check": lambda r: r.second and r.fresh_half == "check",
    }
    pairs = list(zip(replies, verdicts, strict=True))
    result = {}
    for name, keep in parts.items():
        kept = [(r, v) for r, v in pairs if keep(r)]
        if kept or not name.startswith("fresh2"):
            result[name] = figures(*zip(*kept, strict=True))
    return result


def _part(reply: Reply) -> str:
    """One letter: D dev, H held-out, F fresh, T/C the second fresh set's tune/check halves."""
    if reply.second:
        return "T" if reply.fresh_half == "tune" else "C"
    return "F" if reply.fresh else "H" if reply.held_out else "D"


def misses(replies: Sequence[Reply], verdicts: Sequence[Verdict], parts: str = "DHFTC") -> list[str]:
    """The replies classified wrong, in the parts named by their letters (see _part)."""
    return [
        f"{_part(r)} {r.family:<14} want {r.kind}/{r.reason} got {v[0]}/{v[1]}: {r.code} {r.enhanced} {r.text[:140]!r}"
        for r, v in zip(replies, verdicts, strict=True)
        if (r.kind, r.reason) != v and _part(r) in parts
    ]


def main(argv: list[str] | None = None) -> dict[str, Figures]:
    parser = argparse.ArgumentParser(prog="python -m bench.corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--misses", action="store_true", help="list the replies classified wrong")
    parser.add_argument(
        "--parts", default="DHFTC", help="misses of these parts only: D dev, H held-out, F fresh, T/C fresh2 tune/check"
    )
    parser.add_argument("--sisimai", action="store_true", help="also run Sisimai (needs libsisimai-perl)")
    args = parser.parse_args(argv)
    replies = load()
    result = report("sendtrack bounce classifier", replies, [ours(Classifier.load())(r) for r in replies], args)
    if args.sisimai:
        result |= {f"sisimai {k}": v for k, v in report("Sisimai", replies, sisimai(replies), args).items()}
    return result


def report(
    name: str, replies: Sequence[Reply], verdicts: Sequence[Verdict], args: argparse.Namespace
) -> dict[str, Figures]:
    result = split_figures(replies, verdicts)
    print(f"{name} on {CORPUS.name}" + (f" and {FRESH.name}" if FRESH.exists() else ""))
    for part, value in result.items():
        print("  " + value.line(part))
    if args.misses:
        print("\n".join(misses(replies, verdicts, args.parts)))
    return result


if __name__ == "__main__":
    main()
