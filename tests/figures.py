"""Figures that fault and fuzz tests record for the reliability report (tests/reliability/REPORT.md).

A test calls `record(kind, **figures)`; when SENDTRACK_FIGURES names a file, each call appends one JSON
line to it, and `python -m tests.reliability.report` turns the lines into the report. Otherwise nothing
is written: the figures are a by-product of the tests, not their verdict.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


def record(kind: str, **figures: Any) -> None:
    path = os.environ.get("SENDTRACK_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"kind": kind, "at": time.time(), **figures}) + "\n")
