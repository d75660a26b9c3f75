"""The engine seam: what the HTTP layer asks of an engine, in types that know nothing of vLLM.

`server.engine.vllm_engine.VllmEngine` is the real implementation; tests may put a fake behind the
same protocol to exercise the HTTP layer without starting an engine.
"""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class OutputConstraint:
    """What the output must match, enforced token by token (structured outputs). Exactly one."""

    json_schema: dict[str, Any] | None = None  # json_object is {"type": "object"}
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    grammar: str | None = None  # EBNF (GBNF) or Lark


@dataclass(frozen=True, slots=True)
class ToolUse:
    """Function tools offered to the model, and how it may use them (already validated)."""

    tools: tuple[dict[str, Any], ...]  # OpenAI's {"type": "function", "function": {...}}
    choice: str  # "none" | "auto" | "required" | "function" (the one named in `function`)
    function: str | None = None
    parallel: bool = True


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """Sampling parameters of one request, already validated by the API layer."""

    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # how many alternatives per token; None = no logprobs
    logit_bias: dict[int, float] = field(default_factory=dict)
    ignore_eos: bool = False
    constraint: OutputConstraint | None = None
    tools: ToolUse | None = None  # tool calls are parsed out of the text when given
    # Only the finished answer is wanted (batch lines): the engine may hand it over in one delta
    # at the end instead of one per step, which spares the event loop a wake-up per token.
    whole: bool = False


@dataclass(frozen=True, slots=True)
class AdapterRef:
    """A LoRA adapter to generate with.

    `lora_id` must be new for every distinct set of weights: vLLM keys its prefix cache on it,
    so reusing an id for new weights would serve stale KV blocks (vllm#42125).
    """

    name: str
    lora_id: int
    path: str


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """Log-probability of one token, with the most likely alternatives at its position."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """New output of one tool call: its id and name when it starts, then argument text.

    `arguments` is a raw slice of the model's text (never re-serialised JSON).
    """

    index: int  # 0.. within the choice
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ChoiceDelta:
    """New output of one choice since the previous delta.

    `text` holds only complete characters: the engine's incremental detokenizer holds back
    a partial UTF-8 sequence until its last byte arrives. With tools, `text` is the content
    outside tool calls, and the calls come as `tool_calls`.
    """

    index: int
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort"
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of engine load."""

    num_unfinished_requests: int  # requests the front end still tracks (exact, immediate)
    num_running_requests: int  # as of the scheduler's last step
    num_waiting_requests: int
    kv_cache_usage: float  # fraction of KV blocks in use, 0..1
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache, since start
    prefix_cache_hits: int = 0  # of those, tokens found


class Engine(Protocol):
    """What the HTTP layer needs from a generation engine."""

    model_path: str
    max_model_len: int
    vocab_size: int

    def render_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> str:
        """Render chat messages (and the tools offered) with the model's own chat template."""
        ...

    def check(self, options: SamplingOptions) -> None:
        """400 (`InvalidRequestError`) when the engine cannot enforce `options`' constraint or
        tools; blocking work: call it off the event loop, before `generate`."""
        ...

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; `add_special_tokens` adds what the tokenizer adds (e.g. BOS)."""
        ...

    def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        adapter: AdapterRef | None = None,
    ) -> AsyncIterator[list[ChoiceDelta]]:
        """Stream deltas for every choice until all have finished, with `adapter` if given.

        Closing the iterator early (client gone) aborts the request in the engine.
        """
        ...

    async def abort(self, request_ids: list[str]) -> None:
        """Stop these requests now; each one's stream ends with finish_reason "abort"."""
        ...

    async def load_adapter(self, adapter: AdapterRef) -> None:
        """Load `adapter` into the engine now; `InvalidAdapterError` when the engine refuses it."""
        ...

    async def remove_adapter(self, lora_id: int) -> None:
        """Drop the adapter with `lora_id` from the engine (no-op when it is not loaded)."""
        ...

    def stats(self) -> EngineStats:
        """Current load of the engine."""
        ...

    def is_alive(self) -> bool:
        """False once the engine has died (its process was killed or crashed)."""
        ...

    def shutdown(self, wait: bool = True) -> None:
        """Stop the engine and its worker processes; `wait=False` stops them at once, without
        waiting for them to exit cleanly (for when nothing is in flight)."""
        ...
