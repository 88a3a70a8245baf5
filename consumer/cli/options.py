"""Flags that can also come from the environment: --foo-bar reads SENDTRACK_FOO_BAR."""

from __future__ import annotations

import argparse
import os
from typing import Any

TRUE = {"1", "true", "yes", "on"}


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


def kafka_base(args: argparse.Namespace) -> dict[str, Any]:
    """Client config for the CLI tools: the bootstrap servers and any SENDTRACK_KAFKA_* security settings."""
    from consumer.kafka.config import base_config, security_from_env

    return base_config(args.bootstrap_servers, security_from_env(os.environ))
