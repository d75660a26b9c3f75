"""Live times to first token, as the batch pacer reads them: the least over the last ten
minutes, and the slowest since it last asked."""

import pytest

from server.traffic import live_latency
from server.traffic.live_latency import LiveLatency


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_least_is_kept_ten_minutes_and_the_slowest_until_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(live_latency.time, "monotonic", clock)
    latency = LiveLatency()
    assert latency.least() is None
    assert latency.slowest_since_last_call() == 0.0
    latency.add(0.020)
    latency.add(0.008)
    clock.now += 90
    latency.add(0.050)
    assert latency.least() == 0.008
    assert latency.slowest_since_last_call() == 0.050
    assert latency.slowest_since_last_call() == 0.0  # asked: forgotten
    clock.now += 11 * 60  # the 8 ms minute is over ten minutes old now
    latency.add(0.030)
    assert latency.least() == 0.030
