"""Topic administration against the embedded broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from consumer.kafka.admin import COMPACTED, TopicLayoutError, check_copartitioned, ensure_topics, partition_counts
from consumer.kafka.topics import Topics


def test_missing_topics_are_created_with_the_extra_ones_and_existing_ones_are_kept(kafka):
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    topics = Topics.prefixed("admin-a.")
    created = ensure_topics(admin, topics, 3, extra=("admin-a.kumomta.logs",))
    assert sorted(created) == sorted([*topics.all, "admin-a.kumomta.logs"])
    assert set(partition_counts(admin, (*topics.all, "admin-a.kumomta.logs")).values()) == {3}
    assert ensure_topics(admin, topics, 5, extra=("admin-a.kumomta.logs",)) == []  # nothing to do the second time
    described = admin.describe_configs([ConfigResource("topic", topics.changelog)])
    [config] = [future.result(10) for future in described.values()]
    assert {name: config[name].value for name in COMPACTED} == COMPACTED


def test_inputs_of_different_partition_counts_are_refused(kafka):
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    topics = Topics.prefixed("admin-b.")
    [future] = admin.create_topics([NewTopic(topics.control, 2)]).values()
    future.result(10)
    with pytest.raises(TopicLayoutError, match="one partition count"):
        ensure_topics(admin, topics, 3)
    with pytest.raises(TopicLayoutError, match="missing topics"):
        check_copartitioned(admin, Topics.prefixed("admin-c."))
