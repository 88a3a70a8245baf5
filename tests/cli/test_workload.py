"""The synthetic send: its recipient addresses come from a pool only when asked, and change nothing else."""

from __future__ import annotations

from collections import defaultdict

from consumer.cli.workload import WorkloadSpec, generate
from consumer.quarantine.signals import normal_address


def test_without_a_pool_the_events_name_no_address():
    assert {e["address"] for e in generate(WorkloadSpec(deliveries=2, messages=50)).mta_events} == {None}


def test_a_pool_gives_each_message_one_address_and_leaves_the_rest_of_the_send_as_it_was():
    plain = generate(WorkloadSpec(deliveries=3, messages=200, ended=1))
    addressed = generate(WorkloadSpec(deliveries=3, messages=200, ended=1, addresses=150))
    assert [{**e, "address": None} for e in addressed.mta_events] == plain.mta_events
    assert (addressed.delivery_events, addressed.expected) == (plain.delivery_events, plain.expected)
    of_message: dict[tuple[str, str], set[str]] = defaultdict(set)
    for event in addressed.mta_events:
        of_message[event["delivery_id"], event["message_id"]].add(event["address"])
    assert all(len(addresses) == 1 for addresses in of_message.values())
    pool = {normal_address(address) for addresses in of_message.values() for address in addresses}
    assert len(pool) == 150  # shared by the deliveries, in either spelling of the domain
    assert len({a for addresses in of_message.values() for a in addresses}) > len(pool)
