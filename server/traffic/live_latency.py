"""How long live requests wait for their first token, for the batch pacer.

Batch lines are background work, like a background download that must not slow the foreground
(LEDBAT, RFC 6817, measures one-way delay for the same reason): the least time to first token
seen over the last minutes is what the engine gives a live request with nothing in its way,
and a live request that waits clearly longer than that is a sign that the batch is in the way.
"""

import collections
import time

WINDOW_S = 600.0  # the least time to first token is kept over this long
BUCKET_S = 60.0


class LiveLatency:
    """Times to first token of live requests: the least lately, and the slowest since asked."""

    def __init__(self) -> None:
        self._least: collections.deque[tuple[float, float]] = collections.deque()  # (since, s)
        self._slowest = 0.0

    def add(self, ttft_s: float) -> None:
        """A live request got its first token `ttft_s` after it arrived."""
        now = time.monotonic()
        while self._least and self._least[0][0] < now - WINDOW_S:
            self._least.popleft()
        if self._least and self._least[-1][0] > now - BUCKET_S:
            since, least = self._least[-1]
            self._least[-1] = since, min(least, ttft_s)
        else:
            self._least.append((now, ttft_s))
        self._slowest = max(self._slowest, ttft_s)

    def least(self) -> float | None:
        """The least time to first token over the last `WINDOW_S` (None: none seen)."""
        cutoff = time.monotonic() - WINDOW_S
        recent = [least for since, least in self._least if since >= cutoff - BUCKET_S]
        return min(recent, default=None)

    def slowest_since_last_call(self) -> float:
        """The slowest time to first token since this was last called (0: none)."""
        slowest, self._slowest = self._slowest, 0.0
        return slowest
