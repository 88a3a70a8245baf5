"""A send's progress over time, kept bounded per delivery: what the delivery page's chart draws.

Built from the KPI snapshots the view reads anyway (each has `updated_at` and the counters): one point per
snapshot, at most MAX_POINTS per delivery. When full, every other point is dropped (the first kept), so a
long send keeps its whole span at a coarser step. Points are packed unsigned 32-bit numbers (20 bytes each).
After a restart the history is what the compacted KPI topic still holds: its uncompacted head, or only the
latest snapshot of a delivery whose older records were compacted away.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_POINTS = 32
SERIES = ("sent", "failed", "opens_unique", "clicks_unique")  # delivered, bounces + errors, opens, clicks
_WIDTH = 1 + len(SERIES)  # seconds, then the series
_MAX = 2**32 - 1


@dataclass(frozen=True)
class Point:
    at_s: int  # epoch seconds of the snapshot's updated_at
    values: tuple[int, ...]  # in SERIES order


def add(points: array | None, kpi: Mapping[str, Any]) -> array:
    """The history with this snapshot's point added (the same array, grown or thinned in place)."""
    raw = [int(kpi.get("updated_at") or 0) // 1000, *(int(kpi.get(f) or 0) for f in SERIES)]
    point = [min(max(value, 0), _MAX) for value in raw]
    if points is None:
        return array("I", point)
    if points[-_WIDTH] >= point[0]:  # the same second (or an older clock): the newer snapshot wins
        points[-_WIDTH:] = array("I", point)
        return points
    if len(points) >= MAX_POINTS * _WIDTH:
        _thin(points)
    points.extend(point)
    return points


def _thin(points: array) -> None:
    """Every other point dropped, the first kept: half the points over the same span."""
    kept = array("I")
    for start in range(0, len(points), 2 * _WIDTH):
        kept.extend(points[start : start + _WIDTH])
    points[:] = kept


def read(points: array | None) -> list[Point]:
    if points is None:
        return []
    return [Point(points[i], tuple(points[i + 1 : i + _WIDTH])) for i in range(0, len(points), _WIDTH)]
