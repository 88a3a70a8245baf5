"""`python -m bench.classifier`: how fast the bounce classifier and a format mapper run, in one process.

Figures (best of --repeat runs of --n calls each, one core):
- cold: every response text is new (each carries a unique token, as Gmail's do), so the result cache never hits;
  the per-(code, enhanced code, hint) candidate cache does, as it does in production;
- no caches: both caches disabled, so every call filters all rules: the worst case;
- warm: the same few responses again and again (one text per domain and error is common);
- kumomta map: whole TransientFailure records through make_format("kumomta").map (JSON parse, ids, classify,
  event), each with a unique response text.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

from consumer.ingest.classifier import Classifier
from consumer.ingest.formats import make_format

# (reply code, enhanced code, text, vendor hint): a mix of what large mailbox providers answer.
CORPUS: list[tuple[int | None, str | None, str, str | None]] = [
    (
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try double-checking the "
        "recipient's email address for typos or unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser",
        None,
    ),
    (
        421,
        "4.7.28",
        "[198.51.100.7] Our system has detected an unusual rate of unsolicited mail originating from "
        "your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate "
        "limited.",
        None,
    ),
    (
        452,
        "4.2.2",
        "The email account that you tried to reach is over quota. Please direct the recipient to "
        "https://support.google.com/mail/?p=OverQuotaTemp",
        None,
    ),
    (550, "5.5.0", "Requested action not taken: mailbox unavailable (S2017062302). [AM4PEPF00027A5F.eurprd04]", None),
    (451, "4.7.650", "The mail server [198.51.100.7] has been temporarily rate limited due to IP reputation.", None),
    (554, None, "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - mta1234", None),
    (
        421,
        "4.7.0",
        "[TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected volume or user "
        "complaints - 4.16.55.1",
        None,
    ),
    (554, "5.7.1", "Service unavailable; Client host [198.51.100.7] blocked using zen.spamhaus.org", None),
    (450, "4.2.0", "<p@isp.example>: Recipient address rejected: Greylisted, see http://postgrey.example/", None),
    (550, "5.1.1", "<bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table", None),
    (451, "4.3.0", "Temporary local problem - please try later", None),
    (None, None, "KumoMTA internal: failed to connect to any candidate hosts: Connection refused", None),
    (550, None, "Requested action not taken: mailbox unavailable", None),
    (552, "5.2.2", "mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException", None),
    (550, "5.0.0", "Something no rule knows about", None),
    (None, None, "smtp; 550 5.1.1 user unknown", "ses:Permanent/General"),
]


def best_rate(calls: int, repeat: int, run: Callable[[int], None]) -> float:
    """Calls per second of the fastest of `repeat` runs (the least disturbed by the rest of the machine)."""
    best = float("inf")
    for r in range(repeat):
        start = time.perf_counter()
        run(r)
        best = min(best, time.perf_counter() - start)
    return calls / best


def classify_rate(classifier: Classifier, n: int, repeat: int, unique: bool) -> float:
    def run(r: int) -> None:
        for i in range(n):
            code, enhanced, text, hint = CORPUS[i % len(CORPUS)]
            classifier.classify(code, enhanced, f"{text} id={r}.{i}" if unique else text, hint)

    return best_rate(n, repeat, run)


def kumomta_records(n: int, r: int) -> list[bytes]:
    records = []
    for i in range(n):
        code, enhanced, text, _ = CORPUS[i % len(CORPUS)]
        parts = [int(p) for p in enhanced.split(".")] if enhanced else None
        records.append(
            json.dumps(
                {
                    "type": "TransientFailure",
                    "id": f"{r:04x}{i:028x}",
                    "recipient": f"user{i}@example.com",
                    "timestamp": 1767225601 + i,
                    "num_attempts": 1,
                    "bounce_classification": "Uncategorized",
                    "response": {
                        "code": code or 451,
                        "content": f"{text} id={r}.{i}",
                        "command": ".",
                        "enhanced_code": dict(zip(("class", "subject", "detail"), parts, strict=True))
                        if parts
                        else None,
                    },
                    "meta": {"delivery_id": "spring-sale-2026", "message_id": f"msg-{i}"},
                }
            ).encode()
        )
    return records


def map_rate(n: int, repeat: int) -> float:
    kumo = make_format("kumomta")
    batches = [kumomta_records(n, r) for r in range(repeat)]

    def run(r: int) -> None:
        for value in batches[r]:
            kumo.map(value)

    return best_rate(n, repeat, run)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.classifier", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="calls per run (default 50,000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure; the best counts (default 5)")
    args = parser.parse_args(argv)
    default = Classifier.load()
    figures = {
        "classify_cold_per_s": classify_rate(default, args.n, args.repeat, unique=True),
        "classify_no_cache_per_s": classify_rate(Classifier.load(cache_size=0), args.n, args.repeat, unique=True),
        "classify_warm_per_s": classify_rate(default, args.n, args.repeat, unique=False),
        "kumomta_map_per_s": map_rate(args.n, args.repeat),
    }
    result = {
        "rules": len(default.rules),
        "n": args.n,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **{name: round(value) for name, value in figures.items()},
    }
    print(
        f"bounce classifier: {result['rules']} rules, best of {args.repeat} x {args.n:,} calls, "
        f"Python {result['python']} ({result['machine']})"
    )
    for name, value in figures.items():
        print(f"  {name.removesuffix('_per_s'):<18} {value:>12,.0f} /s")
    return result


if __name__ == "__main__":
    main()
