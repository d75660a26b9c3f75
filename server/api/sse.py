"""Server-sent events in OpenAI's framing, through sse-starlette.

Each item of the stream becomes one `data:` line; the stream always ends with `data: [DONE]`.
An error while streaming (headers are already sent, so no status code can change) becomes one
error event in OpenAI's envelope, then `[DONE]`. sse-starlette sends heartbeat comments and,
when the client goes away, cancels the generator, which aborts the engine request.
"""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent

from server.errors import APIError, api_error_body, error_body

logger = logging.getLogger(__name__)


def sse_response(chunks: AsyncIterator[str], heartbeat_s: float) -> EventSourceResponse:
    """Stream JSON strings as SSE events, with heartbeats every `heartbeat_s` (0 = none)."""
    return EventSourceResponse(_framed(chunks), ping=heartbeat_s, sep="\n")


def sse_named_events(
    events: AsyncIterator[tuple[int, str, str]], heartbeat_s: float
) -> EventSourceResponse:
    """Stream (sequence number, type, JSON) as `event:` + `data:` SSE events, as the Responses
    API does (the sequence number is in the JSON):
    no `[DONE]`, the stream's last event is the terminal one; no `id:` lines."""
    return EventSourceResponse(_named(events), ping=heartbeat_s, sep="\n")


def sse_resumable(
    events: AsyncIterator[tuple[int, str, str]], heartbeat_s: float
) -> EventSourceResponse:
    """Stream (sequence number, type, data) as `id:` + `data:`, for `Last-Event-ID` resumes.

    A heartbeat here is a comment line with no blank line after it: with `id:` lines on the
    stream, a comment ended by a blank line makes the OpenAI SDKs' SSE decoders (Python, Go)
    dispatch an empty event that carries the last id, and then fail to parse it as JSON.
    """
    return EventSourceResponse(
        _with_ids(events), ping=heartbeat_s, sep="\n", ping_message_factory=_bare_ping
    )


def _bare_ping() -> Any:
    return b": ping\n"


async def _with_ids(
    events: AsyncIterator[tuple[int, str, str]],
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for seq, _, data in events:
            yield ServerSentEvent(data, id=str(seq), sep="\n")
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _named(
    events: AsyncIterator[tuple[int, str, str]],
) -> AsyncIterator[ServerSentEvent]:
    try:
        async for _, kind, data in events:
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
