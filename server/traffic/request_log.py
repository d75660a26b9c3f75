"""One log line and one metrics update per HTTP request, rate-limit headers on every response,
and the end of the request's ticket.

An ASGI middleware, outside routing, so that it sees every request however it ends: refused
before a route (401, 413), answered by a route, streamed, or cut off by the client. When the
exchange is over it closes the request's `Ticket` (giving back its place in the engine and its
unused tokens), which is why a ticket can never leak.
"""

import logging
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.observability.metrics import Metrics
from server.traffic.limits import RateLimiter
from server.traffic.tickets import Ticket

logger = logging.getLogger("kangaroo.requests")

# Codes of errors that refuse a request before it generates: counted by reason in the metrics.
REFUSALS = frozenset(
    {
        "invalid_api_key",
        "permission_denied",
        "request_too_large",
        "rate_limit_exceeded",
        "server_overloaded",
        "queue_timeout",
        "server_shutting_down",
        "engine_not_ready",
        "engine_dead",
    }
)


class RequestLog:
    """ASGI middleware: log line, metrics, `x-ratelimit-*` headers, ticket release."""

    def __init__(self, app: ASGIApp, metrics: Metrics, limiter: RateLimiter):
        self.app = app
        self.metrics = metrics
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["started"] = started = time.monotonic()
        status = 500  # if the app fails before it answers

        async def send_with_limits(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                caller = state.get("caller")
                if caller is not None:
                    MutableHeaders(scope=message).update(self.limiter.headers(caller))
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        finally:
            ticket: Ticket | None = state.get("ticket")
            if ticket is not None:
                ticket.close()
            self._record(scope, status, time.monotonic() - started, ticket)

    def _record(self, scope: Scope, status: int, duration_s: float, ticket: Ticket | None) -> None:
        state = scope["state"]
        route = scope.get("route")
        path = getattr(route, "path", "unmatched")
        code = ticket.error.code if ticket is not None and ticket.error else state.get("error")
        model = ticket.model if ticket is not None else ""
        self.metrics.requests.labels(path, str(status), model).inc()
        if code in REFUSALS:
            self.metrics.rejected.labels(code).inc()
        if ticket is not None and ticket.admitted_at is not None:
            self.metrics.generations.labels(code or ticket.outcome).inc()
        fields = _fields(scope, status, duration_s, ticket, code)
        logger.info("%s %s %d", scope["method"], scope["path"], status, extra={"request": fields})


def _fields(
    scope: Scope, status: int, duration_s: float, ticket: Ticket | None, code: str | None
) -> dict[str, Any]:
    """The request's log record: who, what, how it went. Never the key itself."""
    state = scope["state"]
    caller = state.get("caller")
    fields: dict[str, Any] = {
        "request_id": state.get("request_id"),
        "key_id": caller.id if caller is not None else None,
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(duration_s * 1000, 1),
    }
    if code is not None:
        fields["error"] = code
    if ticket is not None:
        fields["model"] = ticket.model
        fields["outcome"] = code or ticket.outcome
        fields["prompt_tokens"] = ticket.prompt_tokens
        fields["completion_tokens"] = ticket.completion_tokens
        if ticket.admitted_at is not None:
            fields["queue_ms"] = round((ticket.admitted_at - ticket.arrived) * 1000, 1)
        if ticket.first_token_at is not None:
            fields["ttft_ms"] = round((ticket.first_token_at - ticket.arrived) * 1000, 1)
    return fields
