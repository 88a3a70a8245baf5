"""The limit: a bare confluent-kafka consumer that reads the inputs and Avro-decodes every event.

No state and no output. Prints one JSON line when it is in the group, one when it has read
`--expect` events: the benchmark times it exactly like the service.
"""

from __future__ import annotations

import argparse
import json
import time

from confluent_kafka import Consumer

from consumer.codec.avro import AvroCodec
from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--group-id", required=True)
    parser.add_argument("--deliveries-topic", required=True)
    parser.add_argument("--mta-topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    args = parser.parse_args()
    codecs = {args.deliveries_topic: AvroCodec.named(DELIVERY_EVENT), args.mta_topic: AvroCodec.named(MTA_EVENT)}
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "group.id": args.group_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "partition.assignment.strategy": "range",
            "fetch.wait.max.ms": 100,
            "queued.min.messages": 20_000,
        }
    )
    assigned = []
    consumer.subscribe(list(codecs), on_assign=lambda c, ps: assigned.append(len(ps)))
    seen = 0
    first = None
    while seen < args.expect:
        messages = consumer.consume(5000, 0.1)
        if assigned and assigned[-1] and not first:
            print(json.dumps({"event": "assigned", "t": time.time()}), flush=True)
            first = True
        for msg in messages:
            if msg.error() is None:
                codecs[msg.topic()].decode(msg.value())
                seen += 1
    print(json.dumps({"event": "done", "t": time.time(), "events": seen}), flush=True)
    consumer.close()


if __name__ == "__main__":
    main()
