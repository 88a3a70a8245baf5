"""The Deployment view (consumer/web) wired to a running instance: its KPI view, owner routing, identities,
the actions' publisher, and the message-level answers this instance gives for the partitions it owns."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AdminClient

from consumer.delivery.stage import DeliveryStage, find_delivery_stage
from consumer.kafka import config as kafka_config
from consumer.quarantine.stage import QuarantineStage, find_quarantine_stage
from consumer.runtime.app import Service
from consumer.runtime.settings import Settings
from consumer.web.actions import KafkaPublisher
from consumer.web.addresses import AddressPlacement
from consumer.web.app import WebApp
from consumer.web.auth import Auth, load_web_config
from consumer.web.kpi_view import KpiView
from consumer.web.owner_state import (
    PAGE_SCAN_BUDGET,
    MessageDetail,
    MessagePage,
    message_detail,
    status_page,
)
from consumer.web.owners import (
    ADDRESS_PARTITIONS,
    KeyPartitions,
    Owners,
    client_id_for,
    first_answer,
    group_lookup,
    peer_lookup,
    static_peers,
    topic_partition_count,
)


class InstanceOwnerState:
    """web.owner_state.OwnerState over the delivery stage's committed partition state."""

    def __init__(self, deliveries: DeliveryStage) -> None:
        self._deliveries = deliveries

    def owned_partitions(self) -> set[int]:
        return self._deliveries.owned_partitions()

    def delivery_kpi(self, delivery_id: str) -> dict[str, Any] | None:
        return self._deliveries.kpi(delivery_id)

    def messages(self, delivery_id: str, status: str | None, after: str | None, limit: int) -> MessagePage:
        found = self._deliveries.committed_messages(delivery_id, after, PAGE_SCAN_BUDGET)
        if found is None:
            return MessagePage([], None)
        delivery, messages = found
        return status_page(messages, delivery.efs, delivery.final, status, limit)

    def message(self, delivery_id: str, message_id: str) -> MessageDetail | None:
        found = self._deliveries.committed_message(delivery_id, message_id)
        if found is None:
            return None
        delivery, message = found
        return message_detail(message_id, message, delivery.efs, delivery.final)


def address_placement(s: Settings, quarantine: QuarantineStage | None, admin: AdminClient) -> AddressPlacement | None:
    """Where the address pages find a record: this instance's quarantine stage, the owners of its group's partitions
    (the group's member metadata, else the peers' address_partitions), and the partition the producers of
    address.signals give an address (the same --partitioner). None without the quarantine: no address pages."""
    if quarantine is None:
        return None
    lookup = first_answer(
        group_lookup(admin, quarantine.group_id, s.topics.address_signals),
        peer_lookup(static_peers(s.web_peers), field=ADDRESS_PARTITIONS),
    )
    partitions = KeyPartitions(topic_partition_count(admin, s.topics.address_signals), s.partitioner)
    return AddressPlacement(quarantine, Owners(lookup), partitions)


def default_advertised_url(port: int, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{socket.getfqdn()}:{port}"


def attach(service: Service) -> Callable[[], None]:
    """Serve the view from the service's HTTP server; returns what stops the view's own threads."""
    s = service.settings
    delivery = find_delivery_stage(service.stages)
    if delivery is None:
        raise ValueError("the Deployment view needs the delivery stage")
    config = load_web_config(s.web_config) if s.web_config else None
    tls = config.ssl_context() if config else None
    url = s.advertised_url or default_advertised_url(s.http_port or 0, tls is not None)
    base = kafka_config.base_config(s.bootstrap_servers, s.security)
    kpis = KpiView(base, s.topics.kpis, group=f"{s.group_id}.web", registry=service.metrics.registry)
    service.after_start.append(kpis.start)  # after the checks that need no broker
    admin = AdminClient(base)
    lookup = first_answer(group_lookup(admin, s.group_id, s.topics.mta_events), peer_lookup(static_peers(s.web_peers)))
    # Made at the first action; keyed like the producers of deliveries, so a command reaches the delivery's owner.
    publisher = KafkaPublisher({**base, "partitioner": s.partitioner})
    service.client_id = client_id_for(url)
    service.http_tls = tls
    service.handler = WebApp(
        kpis,
        Owners(lookup),
        Auth(config),
        publisher,
        InstanceOwnerState(delivery),
        service.metrics.registry,
        topics=s.topics,
        advertised_url=url,
        addresses=address_placement(s, find_quarantine_stage(service.stages), admin),
    )

    def stop() -> None:
        if kpis.running:
            kpis.stop()
        publisher.close()

    return stop
