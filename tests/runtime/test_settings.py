"""Declared settings: the quarantine's rules and limits as durations and counts."""

from __future__ import annotations

import argparse

import pytest

from consumer.cli.main import parser
from consumer.cli.run import argv, settings_from
from consumer.runtime.settings import Settings, span_s


def test_the_quarantine_rules_survive_a_spawned_command_line():
    settings = Settings(
        bootstrap_servers="kafka:9092",
        quarantine=True,
        quarantine_threshold=3,
        quarantine_error_window_s=3600.0,
        quarantine_reset_after_s=5 * 86_400.0,
        mailbox_full_release_s=20 * 86_400.0,
        recipient_history=10,
        address_idle_after_s=90 * 86_400.0,
    )
    assert settings_from(parser().parse_args(argv(settings)[3:])) == settings


def test_the_quarantine_flags_parse_durations_and_refuse_never_and_zero_counts():
    args = parser().parse_args(
        ["run", "--bootstrap-servers", "k:9092", "--quarantine-error-window", "12h", "--address-idle-after", "1w"]
    )
    settings = settings_from(args)
    assert (settings.quarantine_error_window_s, settings.address_idle_after_s) == (43_200.0, 604_800.0)
    with pytest.raises(argparse.ArgumentTypeError, match="cannot be never"):
        span_s("never")
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--bootstrap-servers", "k:9092", "--quarantine-threshold", "0"])
