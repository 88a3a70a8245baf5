from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.cli.main import parser
from consumer.cli.options import env_name
from consumer.cli.run import add_service_flags, argv, build_service, settings_from
from consumer.kafka.topics import Topics
from consumer.runtime.errors import CANNOT_START
from consumer.runtime.settings import AT_LEAST_ONCE, IngestSource, Settings, flagged
from consumer.runtime.workers import worker_settings


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


@pytest.mark.parametrize(
    "settings",
    [
        Settings(bootstrap_servers="k:9092", instance_id="i", ingest=(IngestSource("ses", "ses.events"),)),
        Settings(
            bootstrap_servers="k:9092",
            instance_id="i",
            delivery_stage=False,
            ingest=(IngestSource("kumomta", "kumo.logs"),),
            delivery_id_key="campaign",
            message_id_key="msg",
            bounce_rules=(Path("/etc/sendtrack/rules.toml"),),
            partitioner="murmur2_random",
        ),
    ],
)
def test_ingest_settings_survive_the_command_line(settings):
    assert settings_from(parser().parse_args(argv(settings)[3:])) == settings


@pytest.mark.parametrize("command", ["run", "demo"])
def test_every_command_that_runs_an_instance_runs_the_configured_stages(command):
    args = parser().parse_args([command, "--bootstrap-servers", "k:9092", "--ingest", "ses:a, sendgrid:b"])
    service = build_service(settings_from(args))
    assert [runner.stage.name for runner in service.runners] == ["delivery", "ingest-ses", "ingest-sendgrid"]
    assert [runner.stage.inputs for runner in service.runners][1:] == [("a",), ("b",)]


def test_an_ingest_source_must_say_its_format_and_topic():
    for bad in ("ses", "ses:", ":topic"):
        with pytest.raises(ValueError, match="FORMAT:TOPIC"):
            settings_from(parser().parse_args(["run", "--bootstrap-servers", "k", "--ingest", bad]))


def test_each_declared_setting_gives_its_flag_its_environment_variable_and_its_default(monkeypatch):
    assert settings_from(parser().parse_args(["run", "--bootstrap-servers", "k"])) == Settings(bootstrap_servers="k")
    run_flags = argparse.ArgumentParser()
    add_service_flags(run_flags)
    usage = " ".join(run_flags.format_help().split())  # unwrapped
    for _setting, declared in flagged():
        assert f"{declared.name} " in usage and f"[env {env_name(declared.name)}]" in usage
    for name, text, field, value in [
        ("SENDTRACK_HTTP_PORT", "-1", "http_port", None),
        ("SENDTRACK_STATE_RETENTION", "never", "state_retention_s", None),
        ("SENDTRACK_EFS_DEFAULT", "true", "efs_default", True),
        ("SENDTRACK_WEB_PEERS", "http://a,http://b", "web_peers", ("http://a", "http://b")),
    ]:
        monkeypatch.setenv(name, text)
        assert getattr(settings_from(parser().parse_args(["run", "--bootstrap-servers", "k"])), field) == value


def test_workers_is_a_count_or_auto_and_a_worker_command_line_gives_back_its_settings(monkeypatch, tmp_path):
    assert settings_from(parser().parse_args(["run", "--bootstrap-servers", "k", "--workers", "auto"])).workers == (
        os.cpu_count() or 1
    )
    with pytest.raises(SystemExit):
        parser().parse_args(["run", "--bootstrap-servers", "k", "--workers", "0"])
    monkeypatch.setenv("SENDTRACK_WORKERS", "3")  # the parent's environment, which its workers inherit
    worker = worker_settings(Settings(bootstrap_servers="k", workers=3), 1, tmp_path / "w1.port")
    assert settings_from(parser().parse_args(argv(worker)[3:])) == worker  # one process, whatever the environment


def test_the_view_config_is_refused_with_workers_rather_than_ignored(tmp_path):
    line = [sys.executable, "-m", "consumer.cli.main", "run", "--bootstrap-servers", "127.0.0.1:9", "--workers", "2"]
    result = subprocess.run(
        [*line, "--web-config", "web.yml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == CANNOT_START
    assert "--web-config is not supported with --workers" in result.stderr
