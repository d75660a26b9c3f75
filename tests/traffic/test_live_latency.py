"""Live times to first token and between tokens, as the batch pacer reads them: the least
over the last ten minutes, and the latest since it last asked."""

import pytest

from server.traffic import live_latency
from server.traffic.live_latency import LiveLatency


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(live_latency.time, "monotonic", clock)
    return clock


def test_the_least_is_kept_ten_minutes_and_the_slowest_until_asked(clock: Clock) -> None:
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


def test_the_gaps_between_tokens_give_their_median_and_its_least_lately(clock: Clock) -> None:
    latency = LiveLatency()
    for _ in range(live_latency.MIN_GAPS - 1):
        latency.add_gap(0.002)
    assert latency.gaps_since_last_call() is None  # too few to tell
    assert latency.gaps_since_last_call() is None  # and forgotten
    for gap in [0.002] * 10 + [0.003] * 10 + [0.040] * 5:  # a prefill step makes a long gap
        latency.add_gap(gap)
    assert latency.gaps_since_last_call() == (0.003, 0.003)
    for _ in range(20):
        latency.add_gap(0.005)
    assert latency.gaps_since_last_call() == (0.005, 0.003)
    clock.now += 11 * 60  # the 3 ms median is over ten minutes old now
    for _ in range(20):
        latency.add_gap(0.004)
    assert latency.gaps_since_last_call() == (0.004, 0.004)
