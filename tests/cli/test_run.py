from __future__ import annotations

from pathlib import Path

import pytest

from consumer.cli.main import parser
from consumer.cli.run import argv, settings_from
from consumer.kafka.topics import Topics
from consumer.service.settings import AT_LEAST_ONCE, Settings


def test_a_spawned_command_line_gives_back_the_same_settings():
    settings = Settings(
        bootstrap_servers="kafka:9092",
        instance_id="i-1",
        state_dir=Path("/var/lib/x"),
        http_port=None,
        processing_guarantee=AT_LEAST_ONCE,
        efs_default=True,
        create_topics=True,
        partitions=12,
        commit_interval_s=0.25,
        topics=Topics.prefixed("p."),
        security={"sasl.mechanism": "PLAIN"},
    )
    assert settings_from(parser().parse_args(argv(settings)[3:])) == settings


def test_flags_come_from_the_environment_and_security_settings_are_fenced(monkeypatch):
    monkeypatch.setenv("SENDTRACK_BOOTSTRAP_SERVERS", "from-env:9092")
    monkeypatch.setenv("SENDTRACK_STORE", "memory")
    monkeypatch.setenv("SENDTRACK_KAFKA_SASL_PASSWORD", "s3cret")
    settings = settings_from(parser().parse_args(["run"]))
    assert (settings.bootstrap_servers, settings.store) == ("from-env:9092", "memory")
    assert settings.security == {"sasl.password": "s3cret"}
    with pytest.raises(ValueError, match=r"only security\.protocol"):
        settings_from(parser().parse_args(["run", "--kafka", "isolation.level=read_uncommitted"]))
