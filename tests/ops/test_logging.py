"""The log throttle: one line per kind of trouble per interval."""

from __future__ import annotations

import time

from consumer.ops.logging import Throttle


def test_each_kind_is_allowed_once_per_interval():
    throttle = Throttle(interval_s=0.2)
    assert throttle.allows("cut") and throttle.allows(42)  # kinds are independent
    assert not throttle.allows("cut") and not throttle.allows(42)
    time.sleep(0.25)
    assert throttle.allows("cut")
    assert not throttle.allows("cut")
