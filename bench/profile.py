"""Where a service process's CPU time goes: py-spy sampling it during a scenario, summarised as text.

`python -m bench.run --profile` attaches `py-spy record --format raw` to the default scenario's process once it is
ready and stops it (SIGINT, py-spy then writes its file) when the KPIs are correct. py-spy samples only threads
that are running (not waiting in poll or sleep), so the summary is the busy time: `busy_share` is those samples over
what the sampling rate would take in the timed seconds for one thread. Sampling costs the process little (it is
not paused, --nonblocking) but py-spy itself uses CPU on a shared machine: a profiled run's events/s are not a
figure to quote.

`python -m bench.profile <raw file>` prints the summary of a recorded file.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE_HZ = 200
_LINE = re.compile(r" \(([^()]*):\d+\)$")  # "function (path/file.py:123)": the line number varies per sample


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter or on PATH, or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(pid: int, output: Path, log: Path) -> subprocess.Popen:
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    command = [executable, "record", "--pid", str(pid), "--format", "raw", "--rate", str(RATE_HZ), "--nonblocking"]
    with log.open("ab") as out:
        return subprocess.Popen([*command, "--output", str(output)], stdout=out, stderr=subprocess.STDOUT)


def stop(profiler: subprocess.Popen) -> None:
    profiler.send_signal(signal.SIGINT)
    profiler.wait(60)


def summarise(raw: Path, seconds: float, top: int = 20) -> dict[str, Any]:
    """The functions taking the most samples: on their own (self, the innermost frame) and with what they call
    (inclusive), each as a share of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "rate_hz": RATE_HZ,
        "busy_share": total / (RATE_HZ * seconds) if seconds else None,
        "self": [(name, count / total) for name, count in own.most_common(top)] if total else [],
        # Without the loop's callers, in nearly every sample: they say nothing about where the time goes.
        "inclusive": [(name, count / total) for name, count in inclusive.most_common() if count < 0.9 * total][:top],
    }


def _function(frame: str) -> str:
    """`function (file)` without the line, the file relative to the site-packages or project root it is under."""
    found = _LINE.search(frame)
    if not found:
        return frame
    path = found.group(1)
    for marker in ("site-packages/", "/work/main/"):
        path = path.split(marker, 1)[-1]
    return f"{frame[: found.start()]} ({path})"


def markdown_lines(profile: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Profile of the default scenario's process (py-spy, {profile['rate_hz']} Hz, busy threads only): "
        f"{profile['samples']} samples, busy {profile['busy_share'] or 0:.0%} of one thread's time.",
        "",
        "| function | self | inclusive |",
        "|---|---|---|",
    ]
    selfs = dict(profile["self"])
    for name, share in profile["inclusive"]:
        lines.append(f"| `{name}` | {selfs.get(name, 0):.1%} | {share:.1%} |")
    shown = {name for name, _ in profile["inclusive"]}
    for name, share in profile["self"]:
        if name not in shown:
            lines.append(f"| `{name}` | {share:.1%} | - |")
    return lines


if __name__ == "__main__":
    print("\n".join(markdown_lines(summarise(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0))))
