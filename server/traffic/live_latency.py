"""How long live requests wait for their tokens, for the batch pacer.

Batch lines are background work, like a background download that must not slow the foreground
(LEDBAT, RFC 6817, measures one-way delay for the same reason): the least time seen over the
last minutes is what the engine gives a live request with nothing in its way, and a live request
that waits clearly longer than that is a sign that the batch is in the way. Two times are
watched: the time to first token, and the gaps between a stream's tokens (one engine step each:
every batch line in the engine makes each step longer, so the gaps show a batch in the way
before a first token suffers from it).
"""

import collections
import time

WINDOW_S = 600.0  # the least time is kept over this long
BUCKET_S = 60.0
GAP_QUANTILE = 0.5  # the gaps since a call are summed up by their median
MIN_GAPS = 16  # fewer gaps than this since the last call tell nothing
MAX_GAPS = 100_000  # kept between calls at most (none come when no batch runs the pacer)


class WindowedLeast:
    """The least of the values added over the last `WINDOW_S`, kept in `BUCKET_S` buckets."""

    def __init__(self) -> None:
        self._buckets: collections.deque[tuple[float, float]] = collections.deque()  # (since, v)

    def add(self, value: float) -> None:
        """A value seen now."""
        now = time.monotonic()
        while self._buckets and self._buckets[0][0] < now - WINDOW_S:
            self._buckets.popleft()
        if self._buckets and self._buckets[-1][0] > now - BUCKET_S:
            since, least = self._buckets[-1]
            self._buckets[-1] = since, min(least, value)
        else:
            self._buckets.append((now, value))

    def least(self) -> float | None:
        """The least value over the last `WINDOW_S` (None: none seen)."""
        cutoff = time.monotonic() - WINDOW_S
        recent = [least for since, least in self._buckets if since >= cutoff - BUCKET_S]
        return min(recent, default=None)


class LiveLatency:
    """Live times to first token and between tokens: the least lately, and the latest."""

    def __init__(self) -> None:
        self._least_ttft = WindowedLeast()
        self._slowest = 0.0
        self._least_gaps = WindowedLeast()
        self._gaps: list[float] = []

    def add(self, ttft_s: float) -> None:
        """A live request got its first token `ttft_s` after it arrived."""
        self._least_ttft.add(ttft_s)
        self._slowest = max(self._slowest, ttft_s)

    def add_gap(self, gap_s: float) -> None:
        """A live stream got its next tokens `gap_s` after its previous ones."""
        if len(self._gaps) < MAX_GAPS:
            self._gaps.append(gap_s)

    def least(self) -> float | None:
        """The least time to first token over the last `WINDOW_S` (None: none seen)."""
        return self._least_ttft.least()

    def slowest_since_last_call(self) -> float:
        """The slowest time to first token since this was last called (0: none)."""
        slowest, self._slowest = self._slowest, 0.0
        return slowest

    def gaps_since_last_call(self) -> tuple[float, float] | None:
        """The `GAP_QUANTILE` of the gaps between tokens since this was last called, and the
        least of those figures over the last `WINDOW_S`; None with fewer than `MIN_GAPS`."""
        gaps, self._gaps = sorted(self._gaps), []
        if len(gaps) < MIN_GAPS:
            return None
        typical = gaps[int(GAP_QUANTILE * (len(gaps) - 1))]
        self._least_gaps.add(typical)
        return typical, self._least_gaps.least() or typical
