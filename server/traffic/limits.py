"""Rate limits per key: requests and tokens per minute, as token buckets.

Each key has two buckets that hold at most one minute's allowance and refill continuously. A
request takes one request and reserves its prompt tokens plus the most it may generate
(`max_tokens` for each sequence), as OpenAI does, so concurrent requests cannot overshoot the
limit; what it did not use is given back when it ends. A request that finds a bucket short gets
429 with the time until the bucket holds enough. The remaining allowance is reported on every
response in OpenAI's `x-ratelimit-*` headers.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from server.errors import RateLimitError
from server.traffic.auth import Caller

SECONDS_PER_MINUTE = 60.0


@dataclass
class Bucket:
    """Holds up to `capacity` units; refills at `capacity` per minute."""

    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        """Add what flowed in since the last update."""
        rate = self.capacity / SECONDS_PER_MINUTE
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def seconds_until(self, amount: float) -> float:
        """Seconds until the bucket holds `amount` (0 when it does now)."""
        return max(0.0, (amount - self.level) * SECONDS_PER_MINUTE / self.capacity)

    def seconds_until_full(self) -> float:
        """Seconds until the bucket is back at its capacity."""
        return self.seconds_until(self.capacity)


@dataclass
class Reservation:
    """What one request took from its caller's token bucket; settled when it ends."""

    caller_id: str
    tokens: int
    settled: bool = field(default=False)


class RateLimiter:
    """The buckets of every caller, created on a caller's first request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._requests: dict[str, Bucket] = {}
        self._tokens: dict[str, Bucket] = {}

    def admit(self, caller: Caller, tokens: int) -> Reservation:
        """Take one request and reserve `tokens`; `RateLimitError` when either limit is reached."""
        now = self._clock()
        requests = self._bucket(self._requests, caller.id, caller.requests_per_minute, now)
        budget = self._bucket(self._tokens, caller.id, caller.tokens_per_minute, now)
        if requests is not None and requests.level < 1:
            wait = requests.seconds_until(1)
            raise RateLimitError(
                f"Rate limit reached for key '{caller.id}' on requests per minute: limit "
                f"{caller.requests_per_minute}. Try again in {_duration(wait)}.",
                wait,
                "requests",
            )
        if budget is not None:
            self._check_tokens(caller, budget, tokens)
            budget.level -= tokens
        if requests is not None:
            requests.level -= 1
        return Reservation(caller.id, tokens if budget is not None else 0)

    def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Give back what a finished request reserved but did not use."""
        if reservation.settled:
            return
        reservation.settled = True
        budget = self._tokens.get(reservation.caller_id)
        if budget is not None and reservation.tokens:
            budget.refill(self._clock())
            unused = max(0, reservation.tokens - used_tokens)
            budget.level = min(budget.capacity, budget.level + unused)

    def headers(self, caller: Caller) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for `caller` (none for a limit that is not set)."""
        now = self._clock()
        headers = {}
        for kind, buckets, limit in (
            ("requests", self._requests, caller.requests_per_minute),
            ("tokens", self._tokens, caller.tokens_per_minute),
        ):
            bucket = self._bucket(buckets, caller.id, limit, now)
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = _duration(bucket.seconds_until_full())
        return headers

    def _check_tokens(self, caller: Caller, budget: Bucket, tokens: int) -> None:
        if tokens > budget.capacity:
            raise RateLimitError(
                f"Request too large for key '{caller.id}' on tokens per minute: limit "
                f"{caller.tokens_per_minute}, requested {tokens} (the prompt and max_tokens for "
                "each choice). Lower max_tokens or shorten the prompt.",
                budget.seconds_until_full(),
                "tokens",
            )
        if budget.level < tokens:
            wait = budget.seconds_until(tokens)
            raise RateLimitError(
                f"Rate limit reached for key '{caller.id}' on tokens per minute: limit "
                f"{caller.tokens_per_minute}, remaining {max(0, math.floor(budget.level))}, "
                f"requested {tokens}. Try again in {_duration(wait)}.",
                wait,
                "tokens",
            )

    @staticmethod
    def _bucket(
        buckets: dict[str, Bucket], caller_id: str, limit: int | None, now: float
    ) -> Bucket | None:
        if limit is None:
            return None
        bucket = buckets.get(caller_id)
        if bucket is None or bucket.capacity != limit:
            bucket = buckets[caller_id] = Bucket(float(limit), float(limit), now)
        bucket.refill(now)
        return bucket


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"
