"""POST /v1/completions: validate → tokenize prompts → admit → engine → stream or collect.

Each prompt of a batch is its own engine request with `n` choices; choice `i` of prompt `p`
is returned as index `p * n + i`, as OpenAI does.
"""

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from server.api.disconnect import unless_disconnected
from server.api.openapi import (
    DEADLINE_HEADERS,
    GENERATION_ERRORS,
    TextCompletion,
    TextCompletionChunk,
    responses,
)
from server.api.protocol import CompletionRequest
from server.api.replies import CLIENT_CLOSED_REQUEST, ChoiceTotals, Reply
from server.api.sampling import sampling_options
from server.api.sse import sse_response
from server.api.structured import structure
from server.engine.generation import ChoiceDelta, Engine
from server.errors import InvalidRequestError
from server.observability.request_id import new_id
from server.state import State
from server.structured.json_text import JsonStringGuard

router = APIRouter()


@router.post(
    "/v1/completions",
    response_model=None,
    responses=responses(TextCompletion, *GENERATION_ERRORS, stream=TextCompletionChunk),
    openapi_extra=DEADLINE_HEADERS,
)
async def create_completion(
    body: CompletionRequest, request: Request, state: State
) -> dict[str, Any] | Response:
    """Continue one or more prompts, streamed as SSE chunks or returned whole."""
    # 1. Validate (a JSON schema too).
    body.validate_semantics()
    constraint, _ = await structure(body)
    engine = state.ready_engine()
    adapter = await state.resolve_model(body.model)

    # 2. Prompts as token ids.
    prompts = await asyncio.to_thread(_prompt_token_ids, engine, body.prompt)
    options = [
        sampling_options(
            body,
            prompt_len=len(ids),
            max_model_len=engine.max_model_len,
            vocab_size=engine.vocab_size,
            output_limit=body.max_tokens,
            num_logprobs=body.logprobs,
            limit_param="max_tokens",
            prompt_param="prompt",
            constraint=constraint,
        )
        for ids in prompts
    ]
    if constraint is not None:  # the engine can compile it (blocking work)
        await asyncio.to_thread(engine.check, options[0])

    # 3. Admission: the key's rate limits, then places in the engine (429 at once if full).
    ticket = await unless_disconnected(
        request,
        state.traffic.admit(
            request,
            state.model_label(adapter),
            prompt_tokens=sum(len(ids) for ids in prompts),
            max_new_tokens=sum(opts.max_tokens for opts in options) * body.n,
            sequences=len(prompts) * body.n,
        ),
    )
    if ticket is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    # 4. Engine: one request per prompt, merged into one stream, watched by the ticket.
    reply = Reply(
        f"cmpl-{new_id()}",
        "text_completion",
        body.model,
        prompt_tokens=sum(len(ids) for ids in prompts),
        include_usage=body.stream_options is not None and body.stream_options.include_usage,
        return_token_ids=body.return_token_ids,
    )
    streams = [
        state.generate(ticket, f"{reply.id}-{p}", ids, opts, adapter)
        for p, (ids, opts) in enumerate(zip(prompts, options, strict=True))
    ]
    deltas = ticket.watch(_merged(streams, body.n))
    if constraint is not None and constraint.json_schema is not None:
        deltas = _json_guarded(deltas)

    # 5. Stream, or collect the whole reply (stopping if the client leaves).
    if body.stream:
        return sse_response(_stream_chunks(deltas, reply), state.settings.sse_heartbeat_s)
    whole = await unless_disconnected(request, _collect(deltas, reply, len(prompts) * body.n))
    return whole if whole is not None else Response(status_code=CLIENT_CLOSED_REQUEST)


def _prompt_token_ids(engine: Engine, prompt: str | list[Any]) -> list[list[int]]:
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and isinstance(prompt[0], int):
        prompts = [prompt]
    else:
        prompts = prompt
    token_ids = [
        engine.tokenize(p, add_special_tokens=True) if isinstance(p, str) else list(p)
        for p in prompts
    ]
    for i, ids in enumerate(token_ids):
        if not ids:
            raise InvalidRequestError(f"Prompt {i} is empty.", "prompt")
        if bad := [t for t in ids if not 0 <= t < engine.vocab_size]:
            raise InvalidRequestError(
                f"Prompt {i} has token id {bad[0]}, outside the vocabulary "
                f"(0..{engine.vocab_size - 1}).",
                "prompt",
            )
    return token_ids


async def _merged(
    streams: list[AsyncIterator[list[ChoiceDelta]]], n: int
) -> AsyncIterator[list[ChoiceDelta]]:
    """Interleave the prompts' streams as their deltas arrive, choice `i` of prompt `p`
    renumbered `p * n + i`; closing stops them all."""
    queue: asyncio.Queue[tuple[int, list[ChoiceDelta] | BaseException | None]] = asyncio.Queue()

    async def pump(p: int, stream: AsyncIterator[list[ChoiceDelta]]) -> None:
        try:
            async for batch in stream:
                queue.put_nowait((p, batch))
            queue.put_nowait((p, None))
        except Exception as exc:
            queue.put_nowait((p, exc))

    tasks = [asyncio.create_task(pump(p, s)) for p, s in enumerate(streams)]
    try:
        finished = 0
        while finished < len(tasks):
            p, item = await queue.get()
            if item is None:
                finished += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield [dataclasses.replace(delta, index=p * n + delta.index) for delta in item]
    finally:
        for task in tasks:
            task.cancel()  # aborts the engine requests of prompts still running
        await asyncio.gather(*tasks, return_exceptions=True)


async def _json_guarded(
    deltas: AsyncIterator[list[ChoiceDelta]],
) -> AsyncIterator[list[ChoiceDelta]]:
    """Deltas of JSON answers, raw control characters escaped inside their strings."""
    guards: dict[int, JsonStringGuard] = {}
    async for batch in deltas:
        yield [
            dataclasses.replace(d, text=guards.setdefault(d.index, JsonStringGuard()).feed(d.text))
            for d in batch
        ]


async def _stream_chunks(
    deltas: AsyncIterator[list[ChoiceDelta]], reply: Reply
) -> AsyncIterator[str]:
    completion_tokens = 0
    offsets: dict[int, int] = {}
    async for batch in deltas:
        for delta in batch:
            index = delta.index
            completion_tokens += len(delta.token_ids)
            if delta.text or delta.logprobs or (reply.return_token_ids and delta.token_ids):
                offset = offsets.get(index, 0)
                offsets[index] = offset + len(delta.text)
                choice: dict[str, Any] = {
                    "index": index,
                    "text": delta.text,
                    "logprobs": _completion_logprobs(delta.logprobs, offset),
                    "finish_reason": None,
                }
                if reply.return_token_ids:
                    choice["token_ids"] = delta.token_ids
                yield reply.chunk([choice])
            if delta.finish_reason is not None:
                finish = {
                    "index": index,
                    "text": "",
                    "logprobs": None,
                    "finish_reason": delta.finish_reason,
                }
                yield reply.chunk([finish])
    if reply.include_usage:
        yield reply.usage_chunk(completion_tokens)


async def _collect(
    deltas: AsyncIterator[list[ChoiceDelta]], reply: Reply, num_choices: int
) -> dict[str, Any]:
    totals = ChoiceTotals(num_choices)
    async for batch in deltas:
        for delta in batch:
            totals.add(delta.index, delta)
    choices = []
    for i in range(num_choices):
        choice = {
            "index": i,
            "text": totals.text(i),
            "logprobs": _completion_logprobs(totals.logprobs_of(i), 0),
            "finish_reason": totals.finish_reasons[i],
        }
        if reply.return_token_ids:
            choice["token_ids"] = totals.token_ids[i]
        choices.append(choice)
    return {
        "id": reply.id,
        "object": "text_completion",
        "created": reply.created,
        "model": reply.model,
        "choices": choices,
        "usage": reply.usage(totals.completion_tokens),
    }


def _completion_logprobs(logprobs: Any, text_offset: int) -> dict[str, Any] | None:
    """The legacy completions logprobs format; `text_offset` is where this text starts."""
    if logprobs is None:
        return None
    offsets = []
    for lp in logprobs:
        offsets.append(text_offset)
        text_offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [dict(lp.top) for lp in logprobs],
        "text_offset": offsets,
    }
