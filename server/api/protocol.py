"""OpenAI request schemas, validated at the boundary.

Unknown fields are refused (400 naming the field) rather than ignored. OpenAI parameters this
server does not implement are declared, so that an empty value (`tools: []`) is accepted and a
real one gets a 400 saying it is not supported.
"""

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.errors import InvalidRequestError

# Parameters a client may send empty but that we cannot honour yet.
_UNSUPPORTED_CHAT = (
    "functions", "function_call", "audio", "prediction", "web_search_options",
    "reasoning_effort", "metadata", "store", "service_tier", "verbosity",
)  # fmt: skip
_UNSUPPORTED_COMPLETION = ("echo", "suffix")
# vLLM's fields for structured outputs before 0.12, and what replaced them (vLLM 0.32 still
# accepts them and silently generates unconstrained text, vllm#53975).
_REMOVED_GUIDED = {
    "guided_json": "'response_format' (json_schema) or 'structured_outputs': {'json': ...}",
    "guided_regex": "'structured_outputs': {'regex': ...}",
    "guided_choice": "'structured_outputs': {'choice': [...]}",
    "guided_grammar": "'structured_outputs': {'grammar': ...}",
    "guided_decoding_backend": "nothing: the backend is xgrammar, set by the server",
    "guided_whitespace_pattern": "nothing: whitespace in JSON is bounded by the server",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """A text part of a message's content array."""

    type: Literal["text"]
    text: str


FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class CalledFunction(_Strict):
    """The function an assistant message called: its name and JSON-encoded arguments."""

    name: FunctionName
    arguments: str


class ToolCall(_Strict):
    """A tool call of an earlier assistant turn, sent back with the conversation."""

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(_Strict):
    """One chat message. `developer` is OpenAI's newer name for `system`.

    Assistant turns may carry `tool_calls` (their content may then be null); `tool` turns
    answer one of those calls by its id. `refusal`, `annotations` and `audio` are fields of
    the assistant messages OpenAI's clients send back: accepted when empty.
    """

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: Any = None
    function_call: Any = None

    @property
    def text(self) -> str | None:
        """The content as one string (text parts joined by newlines), or None."""
        if self.content is None or isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def check(self, where: str) -> None:
        """Checks across the message's fields; `where` is its place, e.g. `messages.2`."""
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise InvalidRequestError(
                f"'{where}.content' is required (only an assistant message with 'tool_calls' "
                "may leave it out).",
                f"{where}.content",
            )
        if self.tool_calls and self.role != "assistant":
            raise InvalidRequestError(
                f"'{where}.tool_calls' is only allowed on assistant messages, not '{self.role}'.",
                f"{where}.tool_calls",
            )
        if self.role == "tool" and not self.tool_call_id:
            raise InvalidRequestError(
                f"'{where}.tool_call_id' is required: the id of the call this tool message "
                "answers.",
                f"{where}.tool_call_id",
            )
        for j, call in enumerate(self.tool_calls or ()):
            _check_arguments(call.function.arguments, f"{where}.tool_calls.{j}.function.arguments")
        for name in ("refusal", "annotations", "audio", "function_call"):
            if getattr(self, name) not in (None, "", []):
                raise InvalidRequestError(
                    f"'{where}.{name}' is not supported by this server.", f"{where}.{name}"
                )

    def as_template_input(self) -> dict[str, Any]:
        """The message as the chat template expects it: a role and plain-string content."""
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": self.text or ""}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        return message


def _check_arguments(arguments: str, param: str) -> None:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"'{param}' is not valid JSON ({exc.msg}): {arguments[:80]!r}.", param
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequestError(
            f"'{param}' must encode a JSON object: {arguments[:80]!r}.", param
        )


class FunctionDefinition(_Strict):
    """A function the model may call: its name, what it does, its parameters' JSON schema."""

    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(_Strict):
    """`tools[]`: only function tools."""

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    """The function a named `tool_choice` forces."""

    name: str


class NamedToolChoice(_Strict):
    """`tool_choice: {"type": "function", "function": {"name": ...}}`."""

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Strict):
    """`response_format.json_schema`: a named schema the answer must match."""

    name: FunctionName
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class StructuredOutputs(_Strict):
    """vLLM's extension `structured_outputs`: exactly one of these constraints."""

    json_: dict[str, Any] | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None


class StreamOptions(_Strict):
    """`stream_options` of a streamed request."""

    include_usage: bool = False


class ResponseFormat(_Strict):
    """`response_format`: plain text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
# OpenAI's seed is an int64; the engine cannot even receive a larger number.
INT64 = 2**63


class SamplingFields(_Strict):
    """Sampling parameters shared by chat and text completions."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    ignore_eos: bool = False
    return_token_ids: bool = False  # extension (as vLLM's): each choice's generated token ids
    user: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None  # extension, as vLLM's
    guided_json: Any = None  # removed from vLLM: refused naming the replacement
    guided_regex: Any = None
    guided_choice: Any = None
    guided_grammar: Any = None
    guided_decoding_backend: Any = None
    guided_whitespace_pattern: Any = None

    def reject_unsupported(self, names: tuple[str, ...]) -> None:
        """400 for any unsupported parameter given a non-empty value."""
        for name in names:
            value = getattr(self, name)
            if value not in (None, False, [], {}):
                raise InvalidRequestError(f"'{name}' is not supported by this server yet.", name)
        if self.stream_options is not None and not self.stream:
            raise InvalidRequestError(
                "'stream_options' is only allowed when 'stream' is true.", "stream_options"
            )
        for name, replacement in _REMOVED_GUIDED.items():
            if getattr(self, name) is not None:
                raise InvalidRequestError(
                    f"'{name}' was removed from vLLM's API in version 0.12; use {replacement}.",
                    name,
                )


class ChatCompletionRequest(SamplingFields):
    """Body of POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    audio: Any = None
    modalities: list[str] | None = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    verbosity: str | None = None

    def validate_semantics(self) -> None:
        """Checks across fields that the schema cannot express."""
        self.reject_unsupported(_UNSUPPORTED_CHAT)
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequestError(
                "'top_logprobs' requires 'logprobs' to be true.", "top_logprobs"
            )
        if self.modalities not in (None, ["text"]):
            raise InvalidRequestError(
                f"Invalid value for 'modalities': {self.modalities}. Only [\"text\"] is supported.",
                "modalities",
            )
        for i, message in enumerate(self.messages):
            message.check(f"messages.{i}")

    @property
    def num_logprobs(self) -> int | None:
        """Alternatives per token to return, or None when no logprobs were asked for."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def output_limit(self) -> int | None:
        """`max_completion_tokens` (the newer name) or `max_tokens`."""
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else self.max_tokens
        )


class CompletionRequest(SamplingFields):
    """Body of POST /v1/completions."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None

    def validate_semantics(self) -> None:
        """Checks across fields that the schema cannot express."""
        self.reject_unsupported(_UNSUPPORTED_COMPLETION)
        if self.best_of not in (None, self.n):
            raise InvalidRequestError("'best_of' other than 'n' is not supported.", "best_of")
        if isinstance(self.prompt, list) and not self.prompt:
            raise InvalidRequestError("'prompt' must not be an empty list.", "prompt")
