"""A deterministic synthetic send, with its expected final KPIs worked out from the ground truth.

Used by `sendtrack demo`, the tests and the benchmark. The expectation is computed from what
the generator decided happened to each message, not by running the core, so it checks the core.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

DAY_MS = 86_400_000
REASONS_HARD = ("user_unknown", "invalid_domain", "account_disabled")
REASONS_SOFT = ("mailbox_full", "unreachable", "refused", "not_connected")


@dataclass(frozen=True)
class WorkloadSpec:
    deliveries: int = 8
    messages: int = 1_000  # per delivery
    seed: int = 7
    duplicate_rate: float = 0.02
    reorder_window: int = 32
    start_ms: int = 1_767_225_600_000  # 2026-01-01; pass about now() - span_ms() for a live service
    ended: int = 0  # how many deliveries reach their validity end during the send
    # Recipient addresses for the MTA events, from a pool of this many shared by the deliveries (0: none, the
    # events name no address); with --quarantine the delivery stage signals them.
    addresses: int = 0

    def span_ms(self) -> int:
        """From the first relay to the last feedback of a delivery."""
        return self.messages * 5 + 3_600_000

    @classmethod
    def ending_now(cls, **fields: Any) -> WorkloadSpec:
        """A send whose events all lie in the past, so a live service's wall clock agrees with them."""
        spec = cls(**fields)
        return replace(spec, start_ms=int(time.time() * 1000) - spec.span_ms() - 120_000)

    @property
    def delivery_ids(self) -> list[str]:
        return [f"delivery-{i:04d}" for i in range(self.deliveries)]

    def recipient(self, delivery_index: int, message_index: int) -> str | None:
        """A message's address from the pool; every other delivery spells the domain in capitals, which the
        address's normal form folds."""
        if not self.addresses:
            return None
        number = (delivery_index * self.messages + message_index) % self.addresses
        return f"recipient-{number:06d}@{'Example.COM' if delivery_index % 2 else 'example.com'}"


@dataclass
class Workload:
    delivery_events: list[dict[str, Any]] = field(default_factory=list)
    mta_events: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)  # delivery_id -> KPI fields

    @property
    def size(self) -> int:
        return len(self.delivery_events) + len(self.mta_events)


def generate(spec: WorkloadSpec) -> Workload:
    rnd = random.Random(spec.seed)
    workload = Workload()
    for index, delivery_id in enumerate(spec.delivery_ids):
        _delivery(spec, rnd, workload, index, delivery_id)
    workload.mta_events.sort(key=lambda e: e["occurred_at"])
    workload.mta_events = _disorder(workload.mta_events, spec, rnd)
    return workload


def _delivery(spec: WorkloadSpec, rnd: random.Random, workload: Workload, index: int, delivery_id: str) -> None:
    efs = index % 2 == 0
    ended = index < spec.ended
    start = spec.start_ms + index * 1_000
    span = spec.span_ms()
    validity_end = start + (span * 3 // 4 if ended else 30 * DAY_MS)
    confirm_required = index % 3 == 0
    events = workload.delivery_events
    events.append(
        {
            "event_id": f"{delivery_id}-prepared",
            "delivery_id": delivery_id,
            "type": "PREPARED",
            "occurred_at": start - 60_000,
            "to_deliver": spec.messages,
            "efs": efs,
            "validity_end": validity_end,
            "confirmation_required": confirm_required,
        }
    )
    rejected = 0
    if confirm_required:
        if index % 2 == 1:  # someone without the role tries first
            rejected = 1
            events.append(
                {
                    "event_id": f"{delivery_id}-confirm-denied",
                    "delivery_id": delivery_id,
                    "type": "CONFIRMED",
                    "occurred_at": start - 40_000,
                    "actor": "viewer",
                    "actor_roles": ["view_reports"],
                }
            )
        events.append(
            {
                "event_id": f"{delivery_id}-confirmed",
                "delivery_id": delivery_id,
                "type": "CONFIRMED",
                "occurred_at": start - 30_000,
                "actor": "operator",
                "actor_roles": ["start_deliveries"],
            }
        )

    tally: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    seq = 0

    def emit(m: int, kind: str, at: int, **extra: Any) -> None:
        nonlocal seq
        seq += 1
        workload.mta_events.append(
            {
                "event_id": f"{delivery_id}-e{seq}",
                "delivery_id": delivery_id,
                "message_id": f"m{m:07d}",
                "type": kind,
                "occurred_at": at,
                "attempt": extra.pop("attempt", 0),
                "reason": extra.pop("reason", None),
                "url": extra.pop("url", None),
                "address": spec.recipient(index, m),
            }
        )

    for m in range(spec.messages):
        relayed = start + m * 5
        emit(m, "RELAYED", relayed)
        roll = rnd.random()
        sent = False
        if roll < 0.90:
            emit(m, "DELIVERED", relayed + rnd.randint(200, 5_000))
            sent = True
        elif roll < 0.94:
            reason = rnd.choice(REASONS_HARD)
            emit(m, "HARD_BOUNCE", relayed + rnd.randint(200, 5_000), reason=reason)
            reasons[reason] += 1
        else:
            reason = rnd.choice(REASONS_SOFT)
            emit(m, "SOFT_BOUNCE", relayed + rnd.randint(200, 5_000), reason=reason)
            if rnd.random() < 0.60:
                emit(m, "DELIVERED", relayed + rnd.randint(60_000, 600_000), attempt=1)
                sent = True
            else:
                reasons[reason] += 1
                if not ended:  # otherwise the validity end fails it
                    emit(
                        m,
                        "RETRIES_EXHAUSTED",
                        relayed + rnd.randint(600_000, 1_800_000),
                        attempt=3,
                        reason=reason,
                    )
        tally["sent" if sent else "failed"] += 1
        if sent and rnd.random() < 0.30:
            clicked = rnd.random() < 1 / 3
            opens = 0 if clicked and rnd.random() < 0.1 else (2 if rnd.random() < 0.2 else 1)
            for _ in range(opens):
                emit(m, "OPEN", relayed + rnd.randint(60_000, span))
            tally["opens_total"] += opens
            tally["opens_unique"] += 1
            if clicked:
                emit(m, "CLICK", relayed + rnd.randint(60_000, span), url=f"https://shop.example/{m % 7}")
                tally["clicks_total"] += 1
                tally["clicks_unique"] += 1
        if rnd.random() < 0.001:
            emit(m, "COMPLAINT", relayed + rnd.randint(60_000, span))
            tally["complaints"] += 1
    if ended:  # late feedback after the validity end: applied, and the KPI stays final
        emit(0, "IGNORED", validity_end + 1_000)

    processed = spec.messages
    workload.expected[delivery_id] = {
        "delivery_id": delivery_id,
        "state": "FINISHED" if ended else "SENDING",
        "efs": efs,
        "to_deliver": spec.messages,
        "processed": processed,
        "sent": tally["sent"],
        "failed": tally["failed"],
        "pending": 0,
        "opens_unique": tally["opens_unique"],
        "clicks_unique": tally["clicks_unique"],
        "opens_total": tally["opens_total"],
        "clicks_total": tally["clicks_total"],
        "complaints": tally["complaints"],
        "failures_by_reason": dict(sorted(reasons.items())),
        "final": ended,
        "confirmations_rejected": rejected,
    }


def _disorder(events: list[dict[str, Any]], spec: WorkloadSpec, rnd: random.Random) -> list[dict[str, Any]]:
    """Shuffle within small windows and re-send a few events a little later, as MTAs and retries do."""
    window = max(1, spec.reorder_window)
    out: list[dict[str, Any]] = []
    for start in range(0, len(events), window):
        chunk = events[start : start + window]
        rnd.shuffle(chunk)
        out += chunk
    for i in sorted(rnd.sample(range(len(out)), int(len(out) * spec.duplicate_rate)), reverse=True):
        out.insert(min(len(out), i + rnd.randint(1, window * 2)), dict(out[i]))
    return out


def matches(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The fields where a KPI record differs from the expectation (empty when it is right)."""
    return [f"{k}: {actual.get(k)!r} != {v!r}" for k, v in expected.items() if actual.get(k) != v]
