"""OpenAI request schemas, validated at the boundary.

Unknown fields are refused (400 naming the field) rather than ignored. OpenAI parameters this
server does not implement are declared, so that an empty value (`tools: []`) is accepted and a
real one gets a 400 saying it is not supported.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.errors import InvalidRequestError

# Parameters a client may send empty but that we cannot honour yet.
_UNSUPPORTED_CHAT = (
    "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "audio",
    "prediction", "web_search_options", "reasoning_effort", "metadata", "store",
    "service_tier", "verbosity",
)  # fmt: skip
_UNSUPPORTED_COMPLETION = ("echo", "suffix")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """A text part of a message's content array."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """One chat message. `developer` is OpenAI's newer name for `system`."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]
    name: str | None = None
    tool_call_id: str | None = None

    def as_template_input(self) -> dict[str, Any]:
        """The message as the chat template expects it: a role and plain-string content."""
        content = self.content
        if not isinstance(content, str):
            content = "\n".join(part.text for part in content)
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": content}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class StreamOptions(_Strict):
    """`stream_options` of a streamed request."""

    include_usage: bool = False


class ResponseFormat(_Strict):
    """`response_format`: only plain text for now."""

    type: Literal["text"]


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


class ChatCompletionRequest(SamplingFields):
    """Body of POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
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
