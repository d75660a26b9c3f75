"""Server-sent events in OpenAI's framing, through sse-starlette.

Each item of the stream becomes one `data:` line; the stream always ends with `data: [DONE]`.
An error while streaming (headers are already sent, so no status code can change) becomes one
error event in OpenAI's envelope, then `[DONE]`. sse-starlette sends heartbeat comments and,
when the client goes away, cancels the generator, which aborts the engine request.
"""

import json
import logging
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

from server.errors import APIError, api_error_body, error_body

logger = logging.getLogger(__name__)


def sse_response(chunks: AsyncIterator[str], heartbeat_s: float) -> EventSourceResponse:
    """Stream JSON strings as SSE events, with heartbeats every `heartbeat_s` (0 = none)."""
    return EventSourceResponse(_framed(chunks), ping=heartbeat_s, sep="\n")


def sse_named_events(
    events: AsyncIterator[tuple[str, str]], heartbeat_s: float
) -> EventSourceResponse:
    """Stream (type, JSON) pairs as `event:` + `data:` SSE events, as the Responses API does:
    no `[DONE]`, the stream's last event is the terminal one; no `id:` lines."""
    return EventSourceResponse(_named(events), ping=heartbeat_s, sep="\n")


async def _named(events: AsyncIterator[tuple[str, str]]) -> AsyncIterator[ServerSentEvent]:
    try:
        async for kind, data in events:
            yield ServerSentEvent(data, event=kind, sep="\n")
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # at once, not when collected


async def _framed(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield chunk
    except APIError as exc:
        yield json.dumps(api_error_body(exc))
    except Exception:
        logger.exception("Stream failed")
        yield json.dumps(
            error_body("Internal server error.", "server_error", code="internal_error")
        )
    yield "[DONE]"
