"""POST /v1/chat/completions: validate → build prompt → admit → engine → stream or collect."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from server.api.disconnect import unless_disconnected
from server.api.openapi import (
    DEADLINE_HEADERS,
    GENERATION_ERRORS,
    ChatCompletion,
    ChatCompletionChunk,
    responses,
)
from server.api.protocol import ChatCompletionRequest
from server.api.replies import CLIENT_CLOSED_REQUEST, ChoiceTotals, Reply
from server.api.sampling import sampling_options
from server.api.sse import sse_response
from server.engine.generation import ChoiceDelta
from server.observability.request_id import new_id
from server.state import State

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses=responses(ChatCompletion, *GENERATION_ERRORS, stream=ChatCompletionChunk),
    openapi_extra=DEADLINE_HEADERS,
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, state: State
) -> dict[str, Any] | Response:
    """Generate a chat reply, streamed as SSE chunks or returned whole."""
    # 1. Validate: fields the schema cannot check, the engine, the model (base or adapter).
    body.validate_semantics()
    engine = state.ready_engine()
    adapter = await state.resolve_model(body.model)

    # 2. Prompt: the model's own chat template, tokenized off the event loop.
    messages = [message.as_template_input() for message in body.messages]
    prompt_ids = await asyncio.to_thread(lambda: engine.tokenize(engine.render_chat(messages)))
    options = sampling_options(
        body,
        prompt_len=len(prompt_ids),
        max_model_len=engine.max_model_len,
        vocab_size=engine.vocab_size,
        output_limit=body.output_limit,
        num_logprobs=body.num_logprobs,
        limit_param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        prompt_param="messages",
    )

    # 3. Admission: the key's rate limits, then a place in the engine (429 at once if full).
    ticket = await unless_disconnected(
        request,
        state.traffic.admit(
            request,
            state.model_label(adapter),
            prompt_tokens=len(prompt_ids),
            max_new_tokens=options.max_tokens * body.n,
            sequences=body.n,
        ),
    )
    if ticket is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    # 4. Engine: one request with n choices, watched by the ticket (deadline, counts).
    reply = Reply(
        f"chatcmpl-{new_id()}",
        "chat.completion.chunk",
        body.model,
        prompt_tokens=len(prompt_ids),
        include_usage=body.stream_options is not None and body.stream_options.include_usage,
        return_token_ids=body.return_token_ids,
    )
    deltas = ticket.watch(state.generate(ticket, reply.id, prompt_ids, options, adapter))

    # 5. Stream, or collect the whole reply (stopping if the client leaves).
    if body.stream:
        return sse_response(_stream_chunks(deltas, reply, body.n), state.settings.sse_heartbeat_s)
    whole = await unless_disconnected(request, _collect(deltas, reply, body.n))
    return whole if whole is not None else Response(status_code=CLIENT_CLOSED_REQUEST)


async def _stream_chunks(
    deltas: AsyncIterator[list[ChoiceDelta]], reply: Reply, n: int
) -> AsyncIterator[str]:
    for index in range(n):
        role = {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        yield reply.chunk([role])
    completion_tokens = 0
    async for batch in deltas:
        for delta in batch:
            completion_tokens += len(delta.token_ids)
            if delta.text or delta.logprobs or (reply.return_token_ids and delta.token_ids):
                content: dict[str, Any] = {
                    "index": delta.index,
                    "delta": {"content": delta.text},
                    "logprobs": _chat_logprobs(delta.logprobs),
                    "finish_reason": None,
                }
                if reply.return_token_ids:
                    content["token_ids"] = delta.token_ids
                yield reply.chunk([content])
            if delta.finish_reason is not None:
                finish = {
                    "index": delta.index,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": delta.finish_reason,
                }
                yield reply.chunk([finish])
    if reply.include_usage:
        yield reply.usage_chunk(completion_tokens)


async def _collect(
    deltas: AsyncIterator[list[ChoiceDelta]], reply: Reply, n: int
) -> dict[str, Any]:
    totals = ChoiceTotals(n)
    async for batch in deltas:
        for delta in batch:
            totals.add(delta.index, delta)
    choices = []
    for i in range(n):
        choice = {
            "index": i,
            "message": {"role": "assistant", "content": totals.text(i)},
            "logprobs": _chat_logprobs(totals.logprobs_of(i)),
            "finish_reason": totals.finish_reasons[i],
        }
        if reply.return_token_ids:
            choice["token_ids"] = totals.token_ids[i]
        choices.append(choice)
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": choices,
        "usage": reply.usage(totals.completion_tokens),
    }


def _chat_logprobs(logprobs: Any) -> dict[str, Any] | None:
    if logprobs is None:
        return None
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.token.encode()),
                "top_logprobs": [
                    {"token": tok, "logprob": value, "bytes": list(tok.encode())}
                    for tok, value in lp.top
                ],
            }
            for lp in logprobs
        ]
    }
