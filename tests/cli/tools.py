"""Run `sendtrack` tools as users do: a subprocess, with a deadline that turns a hang into a failure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping

HANG_S = 20.0  # every failure must be reported well before this


def sendtrack(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `sendtrack <args>`; finish it with `outcome`."""
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def outcome(process: subprocess.Popen[str], timeout_s: float = HANG_S) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); a process still running after timeout_s is killed and fails the test."""
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"{process.args[3:]} still ran after {timeout_s} s; stderr:\n{stderr[-2000:]}") from None
    return process.returncode, stdout, stderr


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
