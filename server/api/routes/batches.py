"""OpenAI's Batch API: create a batch from an uploaded file, follow it, list, cancel.

POST /v1/batches              {input_file_id, endpoint, completion_window, metadata}
GET  /v1/batches              cursor pages: `after`, `limit` (1-100), newest first
GET  /v1/batches/{id}
POST /v1/batches/{id}/cancel

The server's batch runner (server/batch/runner.py) runs each line through the live route. A key
sees only its own batches; admin keys see all. `Idempotency-Key` makes a retried create return
the batch the first attempt created instead of starting a second one.
"""

import asyncio
import re
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from server.api.openapi import BatchList, BatchObject, responses
from server.api.replies import cursor_page
from server.batch.jobs import Batch, new_batch_id
from server.errors import InvalidRequestError
from server.state import State
from server.traffic.auth import owner_id, visible_owner

router = APIRouter(prefix="/v1/batches")

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
# "24h" as OpenAI; also any window of seconds, minutes or hours up to a week ("30m", "2h").
WINDOW = re.compile(r"^([1-9][0-9]*)([smh])$")
MAX_WINDOW_S = 7 * 24 * 3600
UNIT_S = {"s": 1, "m": 60, "h": 3600}


class CreateBatch(BaseModel):
    """The body of POST /v1/batches."""

    model_config = ConfigDict(extra="forbid")
    input_file_id: str
    endpoint: Literal["/v1/chat/completions", "/v1/completions"]
    completion_window: str = "24h"
    metadata: (
        dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None
    ) = Field(None, max_length=16)


@router.post("", response_model=None, responses=responses(BatchObject, 400, 404))
async def create_batch(
    body: CreateBatch,
    request: Request,
    state: State,
    idempotency_key: Annotated[str | None, Header(max_length=256)] = None,
) -> dict[str, Any]:
    """A new batch (`validating`); its runner picks it up within a second."""
    owner = owner_id(request)
    window_s = _window_s(body.completion_window)
    await asyncio.to_thread(state.files.get, body.input_file_id, owner, "input_file_id")
    limit = state.settings.batch_max_open
    if await asyncio.to_thread(state.batches.open_count, owner) >= limit:
        raise InvalidRequestError(
            f"This key has {limit} batches open, the most this server allows (setting "
            "batch_max_open); wait for one to end or cancel one.",
            "input_file_id",
        )
    now = int(time.time())
    batch = Batch(
        id=new_batch_id(),
        owner=owner,
        endpoint=body.endpoint,
        input_file_id=body.input_file_id,
        completion_window=body.completion_window,
        created_at=now,
        expires_at=now + window_s,
        metadata=body.metadata,
    )
    stored, _ = await asyncio.to_thread(state.batches.create, batch, idempotency_key)
    return stored.to_api()


@router.get("", response_model=None, responses=responses(BatchList, 400, 404))
async def list_batches(
    request: Request,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    """The caller's batches, newest first."""
    batches, has_more = await asyncio.to_thread(
        state.batches.page, visible_owner(request), after, limit
    )
    data = [batch.to_api() for batch in batches]
    return cursor_page(data, has_more)


@router.get("/{batch_id}", response_model=None, responses=responses(BatchObject, 404))
async def retrieve_batch(batch_id: str, request: Request, state: State) -> dict[str, Any]:
    """One batch, its counts as they are now."""
    return (await asyncio.to_thread(state.batches.get, batch_id, visible_owner(request))).to_api()


@router.post("/{batch_id}/cancel", response_model=None, responses=responses(BatchObject, 404))
async def cancel_batch(batch_id: str, request: Request, state: State) -> dict[str, Any]:
    """`cancelling` (then `cancelled`, finished lines kept); an ended batch is returned as is."""
    await asyncio.to_thread(state.batches.get, batch_id, visible_owner(request))

    def cancel(stored: Batch) -> Batch:
        if stored.status in ("validating", "in_progress"):
            return stored.moved("cancelling")
        return stored

    return (await asyncio.to_thread(state.batches.update, batch_id, cancel)).to_api()


def _window_s(window: str) -> int:
    match = WINDOW.match(window)
    seconds = int(match[1]) * UNIT_S[match[2]] if match else 0
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidRequestError(
            f"'completion_window' is {window!r}; use '24h' (or a number of seconds, minutes or "
            "hours up to a week, such as '30m').",
            "completion_window",
        )
    return seconds
