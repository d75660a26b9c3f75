"""Turn a validated request's sampling fields into engine `SamplingOptions`.

Defaults are applied only where a field is absent (`is None`): `temperature=0` means greedy.
"""

from typing import TypeVar

from server.api.protocol import SamplingFields
from server.engine.generation import OutputConstraint, SamplingOptions, ToolUse
from server.errors import InvalidRequestError

T = TypeVar("T")


def sampling_options(
    request: SamplingFields,
    *,
    prompt_len: int,
    max_model_len: int,
    vocab_size: int,
    output_limit: int | None,
    num_logprobs: int | None,
    limit_param: str,
    prompt_param: str,
    constraint: OutputConstraint | None = None,
    tools: ToolUse | None = None,
) -> SamplingOptions:
    """Options for one prompt of `prompt_len` tokens; 400 when it cannot fit the context."""
    return SamplingOptions(
        max_tokens=_output_budget(
            prompt_len, max_model_len, output_limit, limit_param, prompt_param
        ),
        n=request.n,
        temperature=_or(request.temperature, 1.0),
        top_p=_or(request.top_p, 1.0),
        top_k=_top_k(request.top_k, vocab_size),
        min_p=_or(request.min_p, 0.0),
        seed=request.seed,
        stop=_stop_strings(request.stop),
        presence_penalty=_or(request.presence_penalty, 0.0),
        frequency_penalty=_or(request.frequency_penalty, 0.0),
        repetition_penalty=_or(request.repetition_penalty, 1.0),
        logprobs=num_logprobs,
        logit_bias=_logit_bias(request.logit_bias, vocab_size),
        ignore_eos=request.ignore_eos,
        constraint=constraint,
        tools=tools,
    )


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _top_k(top_k: int | None, vocab_size: int) -> int:
    # A top_k of the whole vocabulary or more keeps every token, as none (0) does; past 64 bits
    # the engine could not even receive it.
    return 0 if top_k is None or top_k >= vocab_size else top_k


def _output_budget(
    prompt_len: int,
    max_model_len: int,
    output_limit: int | None,
    limit_param: str,
    prompt_param: str,
) -> int:
    if prompt_len >= max_model_len:
        raise _too_long(
            f"This model's maximum context length is {max_model_len} tokens, but the prompt "
            f"has {prompt_len} tokens, leaving no room for output.",
            prompt_param,
        )
    if output_limit is None:
        return max_model_len - prompt_len
    if prompt_len + output_limit > max_model_len:
        raise _too_long(
            f"This model's maximum context length is {max_model_len} tokens. The prompt has "
            f"{prompt_len} tokens and '{limit_param}' asks for {output_limit}, "
            f"{prompt_len + output_limit} in all. Lower '{limit_param}' to at most "
            f"{max_model_len - prompt_len}.",
            limit_param,
        )
    return output_limit


def _too_long(message: str, param: str) -> InvalidRequestError:
    error = InvalidRequestError(message, param)
    error.code = "context_length_exceeded"  # OpenAI's code; the Responses API truncates on it
    return error


def _stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    strings = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(strings) > 16:
        raise InvalidRequestError(f"'stop' has {len(strings)} strings; at most 16.", "stop")
    if any(s == "" for s in strings):
        raise InvalidRequestError("'stop' must not contain an empty string.", "stop")
    return strings


def _logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float]:
    result: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token_id = int(key)
        except ValueError:
            raise InvalidRequestError(
                f"Invalid key in 'logit_bias': '{key}' is not a token id.", "logit_bias"
            ) from None
        if not 0 <= token_id < vocab_size:
            raise InvalidRequestError(
                f"Invalid key in 'logit_bias': token id {token_id} is outside the vocabulary "
                f"(0..{vocab_size - 1}).",
                "logit_bias",
            )
        result[token_id] = value
    return result
