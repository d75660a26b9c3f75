"""POST /v1/chat/completions: validate → build prompt → admit → engine → stream or collect.

With `tools`, the engine parses calls out of the model's text and the reply carries them as
`tool_calls`; with a JSON `response_format` (or vLLM's `structured_outputs`) the engine holds
the answer to it token by token.

With `X-Resumable: true` a stream runs apart from the HTTP exchange: each event carries an `id:`
(its sequence number); a client whose connection dropped gets the rest from
GET /v1/chat/completions/{id}/stream with `Last-Event-ID`, and stops it with
POST /v1/chat/completions/{id}/cancel. Without it, a disconnect aborts the generation at once.
"""

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response

from server.api.disconnect import unless_disconnected
from server.api.openapi import (
    DEADLINE_HEADERS,
    GENERATION_ERRORS,
    ChatCompletion,
    ChatCompletionChunk,
    StreamStatus,
    responses,
)
from server.api.protocol import ChatCompletionRequest
from server.api.replies import CLIENT_CLOSED_REQUEST, ChatChoice, ChoiceTotals, Reply
from server.api.sampling import sampling_options
from server.api.sse import sse_response, sse_resumable
from server.api.structured import check_tool_messages, structure
from server.engine.generation import ChoiceDelta
from server.errors import (
    APIError,
    InvalidRequestError,
    NotFoundError,
    api_error_body,
    error_body,
)
from server.observability.request_id import new_id
from server.responses.runs import Run
from server.state import ServerState, State
from server.traffic.auth import owner_id, visible_owner
from server.traffic.tickets import Ticket

logger = logging.getLogger(__name__)
router = APIRouter()

RESUMABLE_HEADER = "x-resumable"  # "true": the stream survives a dropped connection


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
    resumable = _asks_resumable(request, body)
    started = await start_chat(body, request, state)
    if started is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    # 5. Stream (apart from this exchange if asked to: resumable), or collect the whole reply
    # (stopping if the client leaves).
    if resumable:
        return _resumable_stream(started, request, state)
    if body.stream:
        chunks = stream_chunks(started)
        return sse_response(chunks, state.settings.sse_heartbeat_s)
    whole = await unless_disconnected(request, collect(started))
    return whole if whole is not None else Response(status_code=CLIENT_CLOSED_REQUEST)


@router.get(
    "/v1/chat/completions/{completion_id}/stream",
    response_model=None,
    responses=responses(None, 400, 404, stream=ChatCompletionChunk),
)
async def resume_chat_completion(
    completion_id: str,
    request: Request,
    state: State,
    last_event_id: Annotated[int, Header(alias="Last-Event-ID", ge=-1)] = -1,
) -> Response:
    """A resumable stream again: its chunks after `Last-Event-ID`, then the live ones."""
    run = _own_run(state, completion_id, request)
    return sse_resumable(run.follow(last_event_id), state.settings.sse_heartbeat_s)


@router.post(
    "/v1/chat/completions/{completion_id}/cancel",
    response_model=None,
    responses=responses(StreamStatus, 404),
)
async def cancel_chat_completion(
    completion_id: str, request: Request, state: State
) -> dict[str, Any]:
    """Stop a resumable stream (its Stop: a dropped connection does not stop it)."""
    run = _own_run(state, completion_id, request)
    run.cancel()
    await run.finished()
    return {
        "id": completion_id,
        "object": "chat.completion.stream",
        "status": run.response["status"],
    }


@dataclass
class ChatGeneration:
    """A chat request admitted to the engine: its reply, its deltas and its choices."""

    reply: Reply
    deltas: AsyncIterator[list[ChoiceDelta]]
    choices: list[ChatChoice]
    ticket: Ticket


async def start_chat(
    body: ChatCompletionRequest, request: Request, state: State, *, prompt_param: str = "messages"
) -> ChatGeneration | None:
    """Validate, build the prompt, admit and start the engine request; None if the client left
    while waiting for admission. The Responses API starts its generations here too."""
    # 1. Validate: fields the schema cannot check (schemas, tools, tool results), the engine,
    # the model (base or adapter).
    body.validate_semantics()
    constraint, tools = await structure(body)
    check_tool_messages(body.messages)
    engine = state.ready_engine()
    adapter = await state.resolve_model(body.model)

    # 2. Prompt: the model's own chat template with the tools offered, tokenized off the event
    # loop; then the engine's check that it can enforce the constraint (compiling it blocks).
    messages = [message.as_template_input() for message in body.messages]
    offered = list(tools.tools) if tools else None
    prompt_ids = await asyncio.to_thread(
        lambda: engine.tokenize(engine.render_chat(messages, offered))
    )
    options = sampling_options(
        body,
        prompt_len=len(prompt_ids),
        max_model_len=engine.max_model_len,
        vocab_size=engine.vocab_size,
        output_limit=body.output_limit,
        num_logprobs=body.num_logprobs,
        limit_param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        prompt_param=prompt_param,
        constraint=constraint,
        tools=tools,
    )
    if constraint is not None or tools is not None:
        await asyncio.to_thread(engine.check, options)

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
        return None

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
    choices = [
        ChatChoice(
            json_content=constraint is not None and constraint.json_schema is not None,
            named_tool=tools is not None and tools.choice == "function",
        )
        for _ in range(body.n)
    ]
    return ChatGeneration(reply, deltas, choices, ticket)


def _asks_resumable(request: Request, body: ChatCompletionRequest) -> bool:
    value = request.headers.get(RESUMABLE_HEADER)
    if value is None or value.lower() == "false":
        return False
    if value.lower() != "true":
        raise InvalidRequestError(
            f"Invalid value for header 'X-Resumable': '{value}'. Give true or false.",
            "X-Resumable",
        )
    if not body.stream:
        raise InvalidRequestError(
            "'X-Resumable: true' asks for a resumable stream: set 'stream' to true.", "stream"
        )
    return True


def _resumable_stream(started: ChatGeneration, request: Request, state: ServerState) -> Response:
    """Generate apart from this exchange: a client whose connection drops gets the rest from
    the resume route within `stream_resume_grace_s`; nobody back by then, it is cancelled."""
    request.state.ticket = None  # the run owns the ticket: it outlives this exchange
    grace_s = state.settings.stream_resume_grace_s
    run = Run({"id": started.reply.id, "status": "in_progress"}, owner_id(request), None, grace_s)
    state.runs.add(run)
    run.start(_generate(state, run, started, grace_s))
    headers = {"X-Resumable-Id": started.reply.id}
    response = sse_resumable(run.follow(-1), state.settings.sse_heartbeat_s)
    response.headers.update(headers)
    return response


async def _generate(state: ServerState, run: Run, started: ChatGeneration, keep_s: float) -> None:
    """A resumable stream's task: its chunks into the run, then kept `keep_s` for late resumes.
    It ends as a plain stream does (an error event if it fails, then `[DONE]`)."""
    try:
        async for chunk in stream_chunks(started):
            run.add_data("chunk", chunk)
        status, last = "completed", None
    except asyncio.CancelledError:
        status = "cancelled"
        last = error_body("The stream was cancelled.", "cancelled", code="cancelled")
    except APIError as exc:
        status, last = "failed", api_error_body(exc)
    except Exception:
        logger.exception("Stream %s failed", run.response["id"])
        status = "failed"
        last = error_body("Internal server error.", "server_error", code="internal_error")
    await started.deltas.aclose()  # type: ignore[attr-defined]  # aborts an unfinished one
    started.ticket.close()
    run.response["status"] = status
    closing = [] if last is None else [("chunk", json.dumps(last))]
    await run.close([*closing, ("chunk", "[DONE]")])
    asyncio.get_running_loop().call_later(keep_s, state.runs.remove, run)


def _own_run(state: ServerState, completion_id: str, request: Request) -> Run:
    run = state.runs.get(completion_id)
    owner = visible_owner(request)
    if run is None or not completion_id.startswith("chatcmpl-") or owner not in (None, run.owner):
        raise NotFoundError(
            f"No resumable stream with id '{completion_id}' (it ended more than "
            "stream_resume_grace_s ago, or it is another key's).",
            "completion_id",
        )
    return run


async def stream_chunks(started: ChatGeneration) -> AsyncIterator[str]:
    """The reply as OpenAI's chunks (JSON strings), in order."""
    deltas, reply, choices = started.deltas, started.reply, started.choices
    for index in range(len(choices)):
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
            choice = choices[delta.index]
            text = choice.content(delta.text)
            if text or delta.logprobs or (reply.return_token_ids and delta.token_ids):
                content: dict[str, Any] = {
                    "index": delta.index,
                    "delta": {"content": text},
                    "logprobs": _chat_logprobs(delta.logprobs),
                    "finish_reason": None,
                }
                if reply.return_token_ids:
                    content["token_ids"] = delta.token_ids
                yield reply.chunk([content])
            for call in choice.tool_call_deltas(delta.tool_calls):
                called = {
                    "index": delta.index,
                    "delta": {"tool_calls": [call]},
                    "logprobs": None,
                    "finish_reason": None,
                }
                yield reply.chunk([called])
            if delta.finish_reason is not None:
                finish = {
                    "index": delta.index,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": choice.finish_reason(delta.finish_reason),
                }
                yield reply.chunk([finish])
    if reply.include_usage:
        yield reply.usage_chunk(completion_tokens)


async def collect(started: ChatGeneration) -> dict[str, Any]:
    """The whole reply as OpenAI's chat.completion object."""
    deltas, reply, choices = started.deltas, started.reply, started.choices
    totals = ChoiceTotals(len(choices))
    async for batch in deltas:
        for delta in batch:
            choice = choices[delta.index]
            # The same path as a stream: what a client assembles equals this message.
            choice.tool_call_deltas(delta.tool_calls)
            totals.add(delta.index, dataclasses.replace(delta, text=choice.content(delta.text)))
    whole = []
    for i, choice in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": totals.text(i)}
        if choice.calls:
            message = {
                "role": "assistant",
                "content": totals.text(i) or None,
                "tool_calls": choice.calls,
            }
        entry = {
            "index": i,
            "message": message,
            "logprobs": _chat_logprobs(totals.logprobs_of(i)),
            "finish_reason": choice.finish_reason(totals.finish_reasons[i]),
        }
        if reply.return_token_ids:
            entry["token_ids"] = totals.token_ids[i]
        whole.append(entry)
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": whole,
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
