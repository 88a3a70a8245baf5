"""What the CLI commands share: flags that can also come from the environment (--foo-bar reads SENDTRACK_FOO_BAR),
and how the tools (produce, kpis, compute-stats, broker) reach Kafka and fail.

Exit codes of the tools: 0 done; 1 it ran but something was not accepted (bad input lines, records Kafka did not
acknowledge, no KPI for the asked delivery); 2 it could not run: a configuration error, or Kafka unreachable,
refusing the TLS handshake or the credentials, or refusing an operation for want of an ACL (the line names the
operation and the resource). A failure is one line on stderr, `sendtrack <tool>: <what, where>`,
never a traceback nor librdkafka's own log lines; secrets in the configuration never appear in it.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

TRUE = {"1", "true", "yes", "on"}
NOT_ACCEPTED = 1
CANNOT_RUN = 2
REACH_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 30.0


class ToolError(Exception):
    """Why a tool cannot run: printed as its one line, exit code CANNOT_RUN."""


def env_name(flag: str) -> str:
    return "SENDTRACK_" + flag.lstrip("-").replace("-", "_").upper()


def add(parser: argparse.ArgumentParser, flag: str, **kwargs: Any) -> None:
    """Add a flag whose default comes from SENDTRACK_<FLAG> when set."""
    value = os.environ.get(env_name(flag))
    if value is not None:
        if kwargs.get("action") == "store_true":
            kwargs["default"] = value.lower() in TRUE
        else:
            kwargs["default"] = kwargs.get("type", str)(value)
            kwargs.pop("required", None)
    kwargs["help"] = f"{kwargs.get('help', '')} [env {env_name(flag)}]".strip()
    parser.add_argument(flag, **kwargs)


def add_bootstrap(parser: argparse.ArgumentParser, required: bool = True) -> None:
    add(parser, "--bootstrap-servers", required=required, help="Kafka bootstrap servers, HOST:PORT[,...]")


def add_partitioner(parser: argparse.ArgumentParser, producers_of: str = "deliveries") -> None:
    """How keyed records pick their partition: as the producers of `deliveries` do, or a delivery's records
    land on partition numbers that no single instance owns together (`address.signals` for the quarantine tool)."""
    from consumer.kafka.config import PARTITIONERS

    add(
        parser,
        "--partitioner",
        choices=PARTITIONERS,
        default="consistent_random",
        help=f"librdkafka partitioner of keyed records; murmur2_random next to Java producers of {producers_of}",
    )


def tool(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """A tool's command: a ToolError or a refusal by Kafka becomes its one line on stderr and exit code CANNOT_RUN."""

    def wrap(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(command)
        def run(args: argparse.Namespace) -> int:
            from consumer.kafka.access import Refused

            try:
                return command(args)
            except (ToolError, Refused) as exc:
                print(f"sendtrack {name}: {exc}", file=sys.stderr)
                return CANNOT_RUN

        return run

    return wrap


def kafka_base(args: argparse.Namespace) -> dict[str, Any]:
    """Client config for the CLI tools: the bootstrap servers and any SENDTRACK_KAFKA_* security settings."""
    from consumer.kafka.config import base_config, security_from_env

    try:
        security = security_from_env(os.environ)
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    return base_config(args.bootstrap_servers, security)


def connect(
    args: argparse.Namespace, topic: str, operation: str = "READ", timeout_s: float = REACH_TIMEOUT_S
) -> dict[str, Any]:
    """The tools' client config, once Kafka answered with it and has the topic; else a ToolError saying why,
    or Denied when the client may not do `operation` (READ, WRITE) on the topic.

    librdkafka's own log lines are off (they would repeat every reconnect); its errors come through error_cb
    and make the one line. TLS and credential refusals end the wait at once, anything else may be a broker
    still starting and gets `timeout_s`.
    """
    from consumer.kafka import access

    config = {
        **kafka_base(args),
        "log_level": 0,  # emergencies only: librdkafka's log lines are not the tools' output
        "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
    }
    try:
        topics = access.reach(config, timeout_s).topics
    except (ValueError, access.Unreachable) as exc:
        raise ToolError(str(exc)) from None
    denied = access.missing_permission(config, {topic: [operation]}, timeout_s)
    if denied is not None:
        raise denied
    if topic not in topics:
        raise ToolError(f"topic {topic!r} does not exist on Kafka at {args.bootstrap_servers}")
    return config


def producer(config: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Any:
    """The tools' idempotent producer: a record not acknowledged within ACK_TIMEOUT_S fails instead of waiting;
    `unacknowledged()` counts the records Kafka did not take and raises Denied for a missing ACL."""
    from consumer.kafka.producer import CheckedProducer

    timeout_ms = int(ACK_TIMEOUT_S * 1000)
    return CheckedProducer({**config, "enable.idempotence": True, "message.timeout.ms": timeout_ms, **(extra or {})})


def aligned(rows: list[list[str]]) -> str:
    """Rows of cells as text columns, each as wide as its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def kafka_failure(config: Mapping[str, Any], what: str, exc: BaseException) -> ToolError:
    """A ToolError for a Kafka operation that failed after connect(), secrets removed."""
    from consumer.kafka.access import scrub

    return ToolError(scrub(f"{what} on Kafka at {config['bootstrap.servers']} failed: {exc}", config))
