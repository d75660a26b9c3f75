"""The OpenAPI document (`/openapi.json`): what each route answers, as it really answers it.

The routes build their JSON as plain dicts (the fast path, unchanged); the models here only
describe those bodies, for clients and for the fuzzer (tests/api/test_fuzz.py), which
checks every response against them. A route names its success body and the errors of its own
in `responses=` (see `responses`); `install_openapi` adds what the middleware answers for
every route: 401 and the bearer key where a key is needed, 403 on the admin API, 500 for a bug.
FastAPI's 422 is removed: a request that fails validation gets a 400 in OpenAI's envelope.
"""

import datetime
from collections.abc import Iterable
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from server.engine.generation import EngineStats

SCHEMAS = "#/components/schemas/"
BEARER = "bearer"  # the name of the security scheme


class _Doc(BaseModel):
    # Strict: a field the server sends but the document does not name is a schema break.
    model_config = ConfigDict(extra="forbid")


# Errors


class ErrorDetail(_Doc):
    """What went wrong; `param` names the field, `code` is machine-readable."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(_Doc):
    """OpenAI's error envelope, for every error status and as the error event of a stream."""

    error: ErrorDetail


# Chat and text completions


class Usage(_Doc):
    """Tokens of the request: prompt, generated over all choices, and their sum."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(_Doc):
    """One alternative token at a position."""

    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(TopLogprob):
    """A generated token, with the `top_logprobs` alternatives asked for."""

    top_logprobs: list[TopLogprob]


class ChatLogprobs(_Doc):
    """Log-probabilities of a chat choice's tokens."""

    content: list[ChatTokenLogprob]


class CalledFunction(_Doc):
    """A function the model called, with its arguments as JSON text."""

    name: str
    arguments: str


class ToolCall(_Doc):
    """A tool call of a generated message."""

    id: str
    type: Literal["function"]
    function: CalledFunction


class AssistantMessage(_Doc):
    """The generated message of a choice: text, or (with `tools`) tool calls and maybe text."""

    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]
TOKEN_IDS = "The generated token ids (only with `return_token_ids`)."


class ChatChoice(_Doc):
    """One choice of a chat completion."""

    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None
    token_ids: list[int] | None = Field(None, description=TOKEN_IDS)


class ChatCompletion(_Doc):
    """A whole chat completion (`stream` false)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class FunctionDelta(_Doc):
    """A tool call's function in a chunk: the name on its first delta, then argument text."""

    name: str | None = None
    arguments: str


class ToolCallDelta(_Doc):
    """Part of a tool call: `id`, `type` and `function.name` on its first delta (with
    `arguments: ""`), then only `index` and argument text (to be concatenated)."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta


class ChatDelta(_Doc):
    """What a chunk adds to a choice: the role first, then content or tool calls; empty with
    the finish."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(_Doc):
    """One choice's part of a chat chunk."""

    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None
    token_ids: list[int] | None = Field(None, description=TOKEN_IDS)


class ChatCompletionChunk(_Doc):
    """One event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(
        None, description="With `stream_options.include_usage`: null, and the counts last."
    )


class CompletionLogprobs(_Doc):
    """The legacy completions format: per token, its logprob, alternatives and text offset."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(_Doc):
    """One choice (or its part, in a chunk); choice `i` of prompt `p` has index `p * n + i`."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None
    token_ids: list[int] | None = Field(None, description=TOKEN_IDS)


class TextCompletion(_Doc):
    """A whole text completion (`stream` false)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class TextCompletionChunk(_Doc):
    """One event of a streamed text completion."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(
        None, description="With `stream_options.include_usage`: null, and the counts last."
    )


# Models and adapters


class EvalAccuracy(_Doc):
    """finetune's accuracy report: the eval rows' last answers generated greedily in vLLM."""

    rows: int
    tuned: float  # share right with the adapter
    base: float  # share right with the base model alone
    json_rows: int
    engine: str


class ModelCard(_Doc):
    """The base model, or an adapter (which has a `parent`, a `version` and its figures)."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    parent: str | None
    max_model_len: int
    version: int | None = None
    rank: int | None = None
    eval_loss: float | None = None
    eval_accuracy: EvalAccuracy | None = None


class ModelList(_Doc):
    """The base model, then every adapter."""

    object: Literal["list"]
    data: list[ModelCard]


class AdapterVersion(_Doc):
    """One stored version of an adapter."""

    object: Literal["adapter.version"]
    name: str
    version: int
    sha256: str
    created: int
    size_bytes: int
    rank: int
    alpha: float
    target_modules: list[str]
    eval_loss: float | None
    train_loss: float | None
    base_fingerprint: str | None
    eval_accuracy: EvalAccuracy | None = None


class PushedAdapter(AdapterVersion):
    """The version a push stored (201), or the equal newest version it made active (200)."""

    model: str
    pinned_model: str
    new: bool


class Adapter(_Doc):
    """An adapter: its live versions and the one its name means."""

    id: str
    object: Literal["adapter"]
    active_version: int | None
    versions: list[AdapterVersion]


class AdapterList(_Doc):
    """Every adapter in the registry."""

    object: Literal["list"]
    data: list[Adapter]


class DeletedAdapter(_Doc):
    """An adapter whose versions were all deleted."""

    id: str
    object: Literal["adapter"]
    deleted: Literal[True]
    versions: list[int]


class DeletedVersion(_Doc):
    """One deleted version (`name@N`)."""

    id: str
    object: Literal["adapter.version"]
    deleted: Literal[True]


# Usage and probes


class UsageRow(_Doc):
    """Totals of one group; it has the grouping fields asked for."""

    day: datetime.date | None = None
    key_id: str | None = None
    model: str | None = None
    mode: Literal["live", "batch"] | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FileObject(_Doc):
    """An uploaded file (OpenAI's file object)."""

    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: Literal["batch", "batch_output"]
    status: Literal["processed"]
    status_details: None
    expires_at: None


class FileList(_Doc):
    """A page of files; `after` = `last_id` fetches the next one while `has_more`."""

    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class DeletedFile(_Doc):
    """A deleted file."""

    id: str
    object: Literal["file"]
    deleted: Literal[True]


class BatchObject(_Doc):
    """A batch (OpenAI's batch object)."""

    id: str
    object: Literal["batch"]
    endpoint: str
    input_file_id: str
    completion_window: str
    status: Literal[
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    ]
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    expires_at: int
    errors: dict[str, Any] | None
    request_counts: dict[str, int]
    metadata: dict[str, str] | None
    usage: dict[str, Any]
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None


class BatchList(_Doc):
    """A page of batches, newest first; `after` = `last_id` fetches the next one."""

    object: Literal["list"]
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class UsageReport(_Doc):
    """Requests and tokens per group, over the days asked for."""

    object: Literal["list"]
    group_by: list[str]
    start: datetime.date | None
    end: datetime.date | None
    data: list[UsageRow]


class Health(_Doc):
    """The process serves HTTP."""

    status: Literal["ok"]


class Readiness(_Doc):
    """The engine can take requests, and its load now."""

    status: Literal["ready"]
    model: str
    engine: EngineStats


# What a route declares


ERROR_DESCRIPTIONS = {
    400: "Invalid request: malformed JSON, wrong types or values, unsupported parameters.",
    401: "No API key, or a wrong one.",
    403: "The key (or, with no keys configured, the client's address) may not use this route.",
    404: "The model, adapter or version does not exist.",
    408: "A deadline passed (`request_timeout`, `queue_timeout`).",
    409: "The adapter was trained on another base model.",
    413: "The request body is over its limit.",
    429: "Over the key's rate limit (`rate_limit_exceeded`) or the queue is full "
    "(`server_overloaded`); retry after `Retry-After` seconds.",
    500: "A bug, or an engine failure (`internal_error`, `engine_error`).",
    503: "The model is loading, the server is draining or the engine died "
    "(`engine_not_ready`, `server_shutting_down`, `engine_dead`).",
}
RETRY_HEADERS = {
    "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
    "retry-after-ms": {"description": "Milliseconds to wait.", "schema": {"type": "integer"}},
}
# What a generation request may ask for: shorter deadlines than the server's.
DEADLINE_HEADERS = {
    "parameters": [
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": description,
            "schema": {"type": "number", "exclusiveMinimum": 0},
        }
        for name, description in (
            ("X-Request-Timeout", "Seconds the whole request may take (408 after)."),
            ("X-Queue-Timeout", "Seconds the request may wait for a place in the engine."),
        )
    ]
}
# The errors every generation route may answer (beyond those `install_openapi` adds).
# Responses


class ResponseObject(_Doc):
    """A response (OpenAI's Responses API object); output items and usage as OpenAI's."""

    id: str
    object: Literal["response"]
    created_at: int
    completed_at: int | None = None
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    background: bool
    model: str
    output: list[dict[str, Any]]
    output_text: str
    instructions: str | None
    max_output_tokens: int | None
    previous_response_id: str | None
    temperature: float
    top_p: float
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    parallel_tool_calls: bool
    text: dict[str, Any]
    truncation: Literal["disabled", "auto"]
    metadata: dict[str, str]
    store: bool
    user: str | None
    service_tier: str
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None


class ResponseStreamEvent(_Doc):
    """One event of a response's stream (`event:` is its type): `response.created`, ...,
    exactly one terminal `response.completed` / `.incomplete` / `.failed` / `.cancelled`."""

    type: str
    sequence_number: int
    response: ResponseObject | None = None
    output_index: int | None = None
    item: dict[str, Any] | None = None
    item_id: str | None = None
    content_index: int | None = None
    part: dict[str, Any] | None = None
    delta: str | None = None
    text: str | None = None
    arguments: str | None = None
    logprobs: list[Any] | None = None


class StreamStatus(_Doc):
    """How a resumable chat stream ended, once its cancel has taken effect."""

    id: str
    object: Literal["chat.completion.stream"]
    status: Literal["completed", "cancelled", "failed"]


class ResponseDeleted(_Doc):
    """The answer to DELETE /v1/responses/{id}."""

    id: str
    object: Literal["response"]
    deleted: Literal[True]


class InputItemList(_Doc):
    """A page of a response's input items; `after` = `last_id` fetches the next one."""

    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


GENERATION_ERRORS = (400, 404, 408, 413, 429, 503)


def responses(
    body: type[BaseModel] | None,
    *errors: int,
    status: int = 200,
    stream: type[BaseModel] | None = None,
    media_type: str = "application/json",
) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: its `status` with `body` (a stream of `stream` chunks too, as
    server-sent events), and each of `errors` with the error envelope."""
    documented: dict[int | str, dict[str, Any]] = {
        code: _error_response(code) for code in sorted(errors)
    }
    ok: dict[str, Any] = {"content": {media_type: {"schema": {"type": "string"}}}}
    if body is not None:
        ok = {"model": body}
    if stream is not None:
        ok["content"] = {"text/event-stream": {"itemSchema": _event_schema(stream)}}
    documented[status] = ok
    return documented


def push_body(from_path: type[BaseModel]) -> dict[str, Any]:
    """The request body of an adapter push, which the route reads itself: a multipart upload
    (a `name` field and file parts named as the adapter's files), or JSON `from_path`."""
    upload = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
        },
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": upload},
                "application/json": {"schema": from_path.model_json_schema()},
            },
        }
    }


def upload_body() -> dict[str, Any]:
    """The request body of a file upload, which the route reads itself (multipart)."""
    upload = {
        "type": "object",
        "required": ["file", "purpose"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"type": "string", "enum": ["batch"]},
        },
    }
    content = {"multipart/form-data": {"schema": upload}}
    return {"requestBody": {"required": True, "content": content}}


def _error_response(code: int) -> dict[str, Any]:
    """The documentation of error status `code`."""
    documented: dict[str, Any] = {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]}
    if code == 429:
        documented["headers"] = RETRY_HEADERS
    return documented


def _event_schema(chunk: type[BaseModel]) -> dict[str, Any]:
    """One server-sent event: a JSON chunk or error envelope, or the final `[DONE]`."""
    payload = {"anyOf": [{"$ref": SCHEMAS + chunk.__name__}, {"$ref": SCHEMAS + "ErrorResponse"}]}
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {"contentMediaType": "application/json", "contentSchema": payload},
            },
            "event": {"type": "string"},
        },
    }


def install_openapi(
    app: FastAPI, keys_enabled: bool, open_paths: Iterable[str], admin_prefixes: Iterable[str]
) -> None:
    """Serve the document with what the middleware adds to each route (see the module doc)."""
    open_set, admin = frozenset(open_paths), tuple(admin_prefixes)

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            _complete(document, keys_enabled, open_set, admin)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def _complete(
    document: dict[str, Any],
    keys_enabled: bool,
    open_paths: frozenset[str],
    admin_prefixes: tuple[str, ...],
) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _add_models(schemas, ErrorResponse, ChatCompletionChunk, TextCompletionChunk)
    if keys_enabled:
        document["components"]["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer"}}
    for path, operations in document["paths"].items():
        for operation in operations.values():
            found = operation["responses"]
            found.pop("422", None)
            extra = [500]
            if keys_enabled and path not in open_paths:
                operation["security"] = [{BEARER: []}]
                extra.append(401)
            if path.startswith(admin_prefixes):
                extra.append(403)
            for code in extra:
                found.setdefault(str(code), _error_entry(code))
            operation["responses"] = dict(sorted(found.items()))


def _error_entry(code: int) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": SCHEMAS + "ErrorResponse"}}},
    }


def _add_models(schemas: dict[str, Any], *models: type[BaseModel]) -> None:
    """Put models that no route returns directly (the stream chunks) in the components."""
    for model in models:
        schema = model.model_json_schema(ref_template=SCHEMAS + "{model}", mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas.setdefault(model.__name__, schema)
