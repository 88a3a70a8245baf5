"""Kafka's refusals as the one line they become: which permission an authorization failure means is missing,
and which transport errors are a refused TLS handshake (tests/reliability/test_security.py runs them on Kafka)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from consumer.kafka import access

CONTEXT = {"group": "g", "transactional_id": "g-a", "topic_operation": "WRITE"}


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "Kafka refused WRITE on topic 't'"),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "Kafka refused READ on group 'g'"),
        (KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "Kafka refused WRITE on transactional id 'g-a'"),
        (KafkaError.CLUSTER_AUTHORIZATION_FAILED, "Kafka refused IDEMPOTENT_WRITE on the cluster"),
    ],
)
def test_an_authorization_failure_names_the_operation_and_the_resource(code: int, line: str) -> None:
    denied = access.denial(KafkaError(code), "t", **CONTEXT)
    assert str(denied) == f"{line}: the principal lacks that ACL"


@pytest.mark.parametrize("code", [KafkaError._TRANSPORT, KafkaError._PURGE_QUEUE, KafkaError.NOT_COORDINATOR])
def test_other_errors_are_no_denial(code: int) -> None:
    assert access.denial(KafkaError(code), "t", **CONTEXT) is None
    assert access.denial(None, "t") is None


def test_a_reader_only_looks_its_group_up() -> None:
    denied = access.reader_denial(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), "t", "sendtrack-tail")
    assert (denied.operation, denied.resource, denied.name) == ("DESCRIBE", "group", "sendtrack-tail")


def test_a_tls_alert_after_the_handshake_is_the_broker_refusing_the_client_certificate() -> None:
    """TLS 1.3: the client finished its handshake before the broker checked its certificate."""
    alert = (
        "sasl_ssl://127.0.0.1:9093/bootstrap: Receive failed: error:0A000416:SSL routines::ssl/tls alert certificate"
        " unknown: SSL alert number 46 (after 2ms in state APIVERSION_QUERY)"
    )
    assert access._refusal("k:9093", KafkaError(KafkaError._TRANSPORT, alert)) == (
        "TLS handshake with Kafka at k:9093 failed: the broker refused the client certificate"
        " (ssl/tls alert certificate unknown: SSL alert number 46)"
    )
    assert access._alert(KafkaError(KafkaError._TRANSPORT, "Connection refused")) is None
