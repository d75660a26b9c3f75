"""What a generation request passes before and after the engine.

    arrival ─► rate limits ─► queue (admission) ─► engine, under a deadline ─► accounting
                 429            429 / 408               408, or stopped by a drain

`Traffic.admit` runs the first two and hands out a `Ticket`; the ticket watches the engine's
output (first token, gaps, tokens, its deadline) and, when the response has ended, gives back
its places in the engine and its unused tokens, and counts the request's usage. A ticket is
closed by the request-log middleware when the HTTP exchange is over, however it ended.
"""

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request

from server.engine.generation import ChoiceDelta
from server.errors import APIError, EngineFailedError, InvalidRequestError, RequestTimeoutError
from server.observability.metrics import Metrics
from server.settings import Settings
from server.traffic.admission import Admission
from server.traffic.auth import INTERNAL_CALLER, Caller
from server.traffic.limits import RateLimiter, Reservation
from server.traffic.live_latency import LiveLatency
from server.traffic.usage import UsageStore, Use

logger = logging.getLogger(__name__)

# Headers a request may use to ask for shorter deadlines than the server's (seconds).
TIMEOUT_HEADER = "x-request-timeout"
QUEUE_TIMEOUT_HEADER = "x-queue-timeout"

Abort = Callable[[list[str]], Awaitable[None]]


def deadline_error(timeout_s: float) -> RequestTimeoutError:
    """The error of a request that ran past its deadline."""
    return RequestTimeoutError(
        f"The request took longer than its {timeout_s:g} s limit and was stopped.",
        "request_timeout",
    )


class Ticket:
    """One admitted (or waiting) generation request, from arrival to its last token."""

    def __init__(
        self,
        traffic: "Traffic",
        caller: Caller,
        model: str,
        prompt_tokens: int,
        places: int,
        reservation: Reservation,
        arrived: float,
        timeout_s: float,
        batch: bool,
    ):
        self.caller = caller
        self.batch = batch  # a batch line: paced behind live requests, counted apart in usage
        self.model = model  # the base model's id or the adapter's name (metrics labels)
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.places = places
        self.arrived = arrived
        self.admitted_at: float | None = None
        self.first_token_at: float | None = None
        self.error: APIError | None = None  # why the generation ended early, if it did
        self._traffic = traffic
        self._reservation = reservation
        self._timeout_s = timeout_s
        self._last_output_at = arrived
        self._engine_requests: list[str] = []
        self._abort: Abort | None = None
        self._aborting: asyncio.Future[None] | None = None
        self._waiting = asyncio.current_task()  # the task waiting in the queue, until admitted
        self._completed = False
        self._closed = False
        loop = asyncio.get_running_loop()
        expiry = loop.time() + timeout_s - (time.monotonic() - arrived)
        self._deadline = loop.call_at(expiry, self._expire)

    @property
    def outcome(self) -> str:
        """How the generation ended: "completed", the error's code, or "client_closed"."""
        if self.error is not None:
            return self.error.code or self.error.error_type
        return "completed" if self._completed else "client_closed"

    @property
    def remaining_s(self) -> float:
        """Seconds left until the request's deadline."""
        return self._timeout_s - (time.monotonic() - self.arrived)

    def generating(self, request_id: str, abort: Abort) -> None:
        """Note an engine request of this request (all are stopped together on expiry)."""
        self._engine_requests.append(request_id)
        self._abort = abort

    async def watch(
        self, deltas: AsyncIterator[list[ChoiceDelta]]
    ) -> AsyncIterator[list[ChoiceDelta]]:
        """`deltas`, timed and counted; raises the reason when the request was stopped."""
        ttft = self._traffic.metrics.ttft.labels(self.model)
        itl = self._traffic.metrics.itl.labels(self.model)
        try:
            async for batch in deltas:
                now = time.monotonic()
                if self.error is not None:
                    raise self.error
                for delta in batch:
                    if delta.finish_reason == "abort":  # we abort only on expiry or drain
                        raise self._failed(EngineFailedError("The engine aborted the request."))
                    if delta.finish_reason == "error":  # e.g. a constraint failed to compile
                        raise self._failed(EngineFailedError("The engine failed the request."))
                    self.completion_tokens += len(delta.token_ids)
                if self.batch:
                    pass  # its answer comes whole, at the end: no token times to tell
                elif self.first_token_at is None:
                    self.first_token_at = now
                    ttft.observe(now - self.arrived)
                    self._traffic.live_latency.add(now - self.arrived)
                else:
                    gap = now - self._last_output_at
                    itl.observe(gap)
                    self._traffic.live_latency.add_gap(gap)
                self._last_output_at = now
                yield batch
            self._completed = True
        except APIError as exc:
            raise self._failed(exc) from None
        finally:
            await deltas.aclose()  # type: ignore[attr-defined]  # aborts unfinished requests

    def stop(self, error: APIError) -> None:
        """End the generation now with `error` (the response, or a stream's error event)."""
        if self._closed or self.error is not None:
            return
        self.error = error
        if self._waiting is not None:  # still in the queue: `Traffic.admit` raises `error`
            self._waiting.cancel()
        elif self._abort is not None and self._engine_requests:
            # The engine then ends each stream with an "abort" output: `watch` sees it at once.
            self._aborting = asyncio.ensure_future(self._abort(self._engine_requests))

    def close(self) -> None:
        """Give back the places and unused tokens; count the usage. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._deadline.cancel()
        traffic = self._traffic
        traffic.forget(self)
        now = time.monotonic()
        traffic.limiter.settle(self._reservation, self.prompt_tokens + self.completion_tokens)
        if self.admitted_at is None:
            return
        traffic.admission.leave(self.places, now - self.admitted_at)
        traffic.record_usage(self, now - self.arrived)

    def admitted(self) -> None:
        """The request has its places in the engine."""
        self.admitted_at = time.monotonic()
        self._waiting = None
        self._traffic.metrics.queue_time.labels(self.model).observe(self.admitted_at - self.arrived)

    def _expire(self) -> None:
        self.stop(deadline_error(self._timeout_s))

    def _failed(self, error: APIError) -> APIError:
        self.error = self.error or error
        return self.error


class Traffic:
    """Rate limits, the admission queue, deadlines and usage, for every generation request."""

    def __init__(self, settings: Settings, metrics: Metrics, usage: UsageStore):
        self.limiter = RateLimiter()
        self.admission = Admission(settings.max_num_seqs, settings.max_waiting_requests)
        self.metrics = metrics
        self.usage = usage
        self.tickets: set[Ticket] = set()  # open tickets, for a drain
        self.live_latency = LiveLatency()
        self.on_live_arrival: Callable[[], None] = lambda: None  # the batch pacer listens
        self.idle = asyncio.Event()  # set while no ticket is open
        self.idle.set()
        self._timeout_s = settings.request_timeout_s
        self._queue_timeout_s = settings.max_queue_wait_s

    async def admit(
        self,
        request: Request,
        model: str,
        *,
        prompt_tokens: int,
        max_new_tokens: int,
        sequences: int,
    ) -> Ticket:
        """Check the caller's limits, then wait for places in the engine; the request's ticket.

        `max_new_tokens` is the most the request may generate over all its sequences (what
        the token budget reserves). 429 at once when over a limit or when the queue is full,
        408 when the wait outlasts the request's queue deadline.
        """
        timeout_s, queue_timeout_s = self._deadlines(request)
        caller: Caller = request.state.caller
        reservation = self.limiter.admit(caller, prompt_tokens + max_new_tokens)
        arrived: float = getattr(request.state, "started", time.monotonic())
        places = self.admission.places_for(sequences)
        batch = INTERNAL_CALLER in request.scope  # only the batch runner calls routes in-process
        ticket = Ticket(
            self, caller, model, prompt_tokens, places, reservation, arrived, timeout_s, batch
        )
        request.state.ticket = ticket  # closed by the request log when the response has ended
        self.tickets.add(ticket)
        self.idle.clear()
        if not batch:
            self.on_live_arrival()
        wait_s = min(queue_timeout_s, ticket.remaining_s)
        try:
            await self.admission.enter(places, wait_s)
        except RequestTimeoutError:
            if wait_s < queue_timeout_s:  # the whole request's deadline came first
                raise deadline_error(timeout_s) from None
            raise
        except asyncio.CancelledError:
            if ticket.error is None:  # the client left
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            raise ticket.error from None  # stopped while waiting (a drain)
        ticket.admitted()
        return ticket

    def record_usage(self, ticket: Ticket, duration_s: float) -> None:
        """Count a finished request in the usage store and the metrics."""
        key_id, model = ticket.caller.id, ticket.model
        mode = "batch" if ticket.batch else "live"
        self.usage.add(Use(key_id, model, ticket.prompt_tokens, ticket.completion_tokens, mode))
        self.metrics.prompt_tokens.labels(key_id, model, mode).inc(ticket.prompt_tokens)
        self.metrics.completion_tokens.labels(key_id, model, mode).inc(ticket.completion_tokens)
        self.metrics.e2e.labels(model).observe(duration_s)

    def live_in_flight(self) -> bool:
        """Whether a live request (not a batch line) is open."""
        return any(not t.batch for t in self.tickets)

    def live_waiting(self) -> int:
        """Live requests (not batch lines) waiting in the queue for places in the engine."""
        return sum(1 for t in self.tickets if t.admitted_at is None and not t.batch)

    def longest_live_wait(self) -> float:
        """Seconds the live request waiting longest for its first token has waited (0: none)."""
        now = time.monotonic()
        waits = (now - t.arrived for t in self.tickets if t.first_token_at is None and not t.batch)
        return max(waits, default=0.0)

    def forget(self, ticket: Ticket) -> None:
        """A ticket has closed."""
        self.tickets.discard(ticket)
        if not self.tickets:
            self.idle.set()

    def stop_all(self, error: APIError) -> None:
        """Stop every open request with `error` (a drain that ran out of time, a dead engine)."""
        for ticket in list(self.tickets):
            ticket.stop(error)

    def _deadlines(self, request: Request) -> tuple[float, float]:
        """The request's total and queue deadlines: the server's, or less when it asks."""
        return (
            _asked_seconds(request, TIMEOUT_HEADER, self._timeout_s),
            _asked_seconds(request, QUEUE_TIMEOUT_HEADER, self._queue_timeout_s),
        )


def _asked_seconds(request: Request, header: str, limit: float) -> float:
    value = request.headers.get(header)
    if value is None:
        return limit
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise InvalidRequestError(
            f"Invalid value for header '{header}': '{value}'. Give a number of seconds > 0.",
            header,
        )
    return min(seconds, limit)
