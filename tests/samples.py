"""The bundled sample delivery (samples/), as events, and the KPIs worked out by hand from its story."""

from __future__ import annotations

from pathlib import Path

from consumer.codec.schemas import DELIVERY_EVENT, MTA_EVENT, load
from consumer.codec.validation import parse_json_event

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DELIVERIES_FILE = SAMPLES / "spring-sale.deliveries.jsonl"
MTA_FILE = SAMPLES / "spring-sale.mta.jsonl"
DELIVERY_ID = "spring-sale-2026"

# 12 messages with EFS: 8 delivered, 1 retry success, 1 hard bounce, 1 soft bounce still retrying
# (Failed with EFS), 1 retries exhausted; 3 opened (one by a click only), 2 clicked, 1 complaint.
EXPECTED_KPI = {
    "delivery_id": DELIVERY_ID,
    "state": "SENDING",
    "efs": True,
    "to_deliver": 12,
    "processed": 12,
    "sent": 9,
    "failed": 3,
    "pending": 0,
    "delivered_pct": 75.0,
    "bounces_errors_pct": 25.0,
    "opens_unique": 3,
    "clicks_unique": 2,
    "opens_total": 3,
    "clicks_total": 2,
    "complaints": 1,
    "failures_by_reason": {"mailbox_full": 2, "user_unknown": 1},
    "open_rate_pct": 100.0 * 3 / 9,
    "click_through_rate_pct": 100.0 * 2 / 9,
    "progress_pct": 100.0,
    "final": False,
    "archived": False,
    "confirmations_rejected": 1,
}


def events(path: Path, schema_name: str) -> list[dict]:
    schema = load(schema_name)
    return [parse_json_event(line, schema) for line in path.read_text().splitlines() if line.strip()]


def all_events() -> list[dict]:
    return events(DELIVERIES_FILE, DELIVERY_EVENT) + events(MTA_FILE, MTA_EVENT)
