"""Admission control: how many sequences generate at once, and a bounded queue for the rest.

The engine runs at most `max_num_seqs` sequences in a batch; a request needs one place per
sequence it generates (`n` choices of each prompt). Requests that do not fit wait here, first
come first served, up to `max_waiting` of them; one more is refused at once with 429 and an
estimate of when to retry, instead of waiting in an unbounded queue. A request that waits
longer than its queue deadline gets 408.
"""

import asyncio
import collections
from dataclasses import dataclass

from server.errors import OverloadedError, RequestTimeoutError

# Smoothing of the mean time a request holds its places (the Retry-After estimate).
SERVICE_TIME_WEIGHT = 0.1
RETRY_AFTER_RANGE_S = (0.05, 60.0)


@dataclass
class _Waiter:
    places: int
    granted: asyncio.Future[None]


class Admission:
    """Places in the engine and the queue in front of them."""

    def __init__(self, max_running: int, max_waiting: int):
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.running = 0  # places taken
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._mean_service_s = 1.0

    @property
    def waiting(self) -> int:
        """Requests in the queue."""
        return len(self._queue)

    def places_for(self, sequences: int) -> int:
        """Places a request of `sequences` takes (a request larger than the batch takes all)."""
        return max(1, min(sequences, self.max_running))

    async def enter(self, places: int, timeout_s: float) -> None:
        """Take `places`, waiting up to `timeout_s` for them.

        `OverloadedError` at once when the queue is full; `RequestTimeoutError` after the wait.
        """
        if not self._queue and self.running + places <= self.max_running:
            self.running += places
            return
        if len(self._queue) >= self.max_waiting:
            raise OverloadedError(
                f"The server is overloaded: {self.running} sequences are generating and "
                f"{len(self._queue)} requests are waiting. Retry later.",
                self.retry_after_s(),
            )
        waiter = _Waiter(places, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), timeout_s)
        except BaseException as exc:
            if waiter.granted.done():  # granted just as the wait ended: give the places back
                self.leave(places, None)
            else:
                self._queue.remove(waiter)
                waiter.granted.cancel()
                self._grant()  # a large request leaving the head may let smaller ones in
            if isinstance(exc, TimeoutError):
                raise RequestTimeoutError(
                    f"The request waited {timeout_s:g} s for a place in the engine; retry later "
                    "or allow a longer wait (X-Queue-Timeout).",
                    "queue_timeout",
                ) from None
            raise

    def leave(self, places: int, held_s: float | None) -> None:
        """Give back `places` held for `held_s` seconds (None: not a full request's worth)."""
        self.running -= places
        if held_s is not None:
            self._mean_service_s += SERVICE_TIME_WEIGHT * (held_s - self._mean_service_s)
        self._grant()

    def retry_after_s(self) -> float:
        """When a place is likely to be free for a request arriving now.

        The queue moves at about `max_running` places per mean service time.
        """
        estimate = self._mean_service_s * (len(self._queue) + 1) / self.max_running
        low, high = RETRY_AFTER_RANGE_S
        return min(high, max(low, estimate))

    def _grant(self) -> None:
        while self._queue and self.running + self._queue[0].places <= self.max_running:
            waiter = self._queue.popleft()
            self.running += waiter.places
            waiter.granted.set_result(None)
