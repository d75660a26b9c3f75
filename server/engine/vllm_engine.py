"""The vLLM engine behind the `generation.Engine` seam. The only module that imports vLLM."""

import copy
import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vllm import SamplingParams
from vllm.config.structured_outputs import StructuredOutputsConfig
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.envs import enable_envs_cache
from vllm.exceptions import VLLMValidationError
from vllm.inputs import tokens_input
from vllm.lora.request import LoRARequest
from vllm.parser import ParserManager
from vllm.parser.abstract_parser import Parser
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
from vllm.tool_parsers import ToolParserManager
from vllm.utils.gc_utils import freeze_gc_heap
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import SchedulerStats
from vllm.v1.structured_output.backend_xgrammar import validate_xgrammar_grammar

from server.contract import SettingsError
from server.engine import chat_format
from server.engine.generation import (
    AdapterRef,
    ChoiceDelta,
    EngineStats,
    OutputConstraint,
    SamplingOptions,
    TokenLogprob,
    ToolCallDelta,
    ToolUse,
)
from server.errors import (
    EngineDeadError,
    InvalidAdapterError,
    InvalidRequestError,
)
from server.settings import Settings

logger = logging.getLogger(__name__)


# Longest run of whitespace inside JSON the engine allows (structured outputs and tool-call
# arguments): unbounded, models loop on whitespace until max_tokens (vllm#38696; measured: the
# demo model wrote 20 newlines in a row when 20 were allowed). Enough for a newline and the
# indent of pretty-printed JSON three levels deep.
MAX_JSON_WHITESPACE = 8


class VllmEngine:
    """An in-process vLLM `AsyncLLM` (continuous batching, paged KV cache)."""

    def __init__(
        self,
        llm: AsyncLLM,
        scheduler_stats: "_LatestSchedulerStats",
        model_path: str,
        tool_format: str,
    ):
        self._llm = llm
        self._scheduler_stats = scheduler_stats
        self._tokenizer = llm.get_tokenizer()
        self.model_path = model_path
        self.max_model_len = llm.model_config.max_model_len
        self.vocab_size = llm.model_config.get_vocab_size()
        self.tool_format = tool_format
        # The generic format writes calls as Hermes does, so Hermes' parser reads them.
        parser = "hermes" if tool_format == chat_format.GENERIC else tool_format
        parser_cls = ParserManager.get_parser(
            tool_parser_name=parser,
            enable_auto_tools=True,
            # Level "parameter": every call, once started (also under tool_choice auto, and
            # beside a response_format), is held to its tool's name and argument schema, as if
            # every tool were `strict`. vLLM's default "auto" constrains only `strict` tools and
            # drops the tools when a response_format is given (vllm#39929); "function" holds
            # the envelope but leaves arguments free (measured: a number for an object).
            tool_strict_level="parameter",
            tokenizer=self._tokenizer,
            model_name=model_path,
        )
        assert parser_cls is not None  # a tool parser name always gives a parser
        self._parser_cls: type[Parser] = parser_cls

    @classmethod
    def start(cls, settings: Settings, model_path: str) -> "VllmEngine":
        """Build the engine and start its worker processes (blocks for the model load)."""
        if current_platform.is_cpu():
            # Read by vLLM's CPU worker when it sizes the KV cache; workers inherit the env.
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gib)
            # vLLM's V2 CPU model runner crashes on structured outputs (vllm#51283).
            os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
        args = AsyncEngineArgs(
            model=model_path,
            served_model_name=settings.served_model_name,
            dtype=checkpoint_dtype(model_path) if settings.dtype == "auto" else settings.dtype,
            max_model_len=settings.max_model_len,
            max_num_seqs=settings.max_num_seqs,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            enable_prefix_caching=settings.enable_prefix_caching,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            tensor_parallel_size=settings.tensor_parallel_size,
            pipeline_parallel_size=settings.pipeline_parallel_size,
            distributed_executor_backend=settings.distributed_executor_backend,
            seed=settings.seed,
            enforce_eager=settings.enforce_eager,
            async_scheduling=None if settings.async_scheduling else False,  # None: vLLM's choice
            enable_lora=settings.enable_lora,
            max_lora_rank=settings.max_lora_rank,
            max_loras=settings.max_loras,
            max_cpu_loras=settings.max_cpu_loras,
            # Pinned: under "auto" the first structured request latches the engine onto one
            # backend and later requests get another backend's constraint (vllm#43920).
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar"),
            disable_log_stats=True,  # our own stat logger below still receives every step
        )
        config = args.create_engine_config()
        if settings.async_scheduling and current_platform.is_cpu():
            # vLLM's CPU platform turns it off as "not required on CPU" (vllm#31525). But the
            # model worker has cores of its own, and between steps it waits for the engine
            # core's scheduling and grammar work; overlapped with the step, vLLM's `LLM` on the
            # demo model (16 sequences, medians of 3) went from 4,100 to 4,400 tok/s plain and
            # from 3,600 to 4,150 under a JSON schema. vLLM's V1 runner cannot pipeline stages so.
            config.scheduler_config.async_scheduling = settings.pipeline_parallel_size == 1
        logger.info(
            "Async scheduling: %s", "on" if config.scheduler_config.async_scheduling else "off"
        )
        stats = _LatestSchedulerStats()
        llm = AsyncLLM.from_vllm_config(
            config, stat_loggers=[stats.logger_factory], disable_log_stats=True
        )
        # Per-request costs of this process, paid in every burst of arrivals: vLLM reads its
        # env vars anew on each access until told they are final (its engine processes do
        # this, its API server does not), and objects made at start-up need not be scanned by
        # every full garbage collection (vLLM's server freezes them too).
        enable_envs_cache()
        freeze_gc_heap()
        tool_format = resolve_tool_format(settings.tool_call_parser, llm.get_tokenizer())
        logger.info(
            "Tool calls: the '%s' format (tool_call_parser=%s)",
            tool_format,
            settings.tool_call_parser,
        )
        return cls(llm, stats, model_path, tool_format)

    def render_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> str:
        """Render chat messages (and the tools offered) with the model's own chat template."""
        return render_chat_template(self._tokenizer, messages, tools, self.tool_format)

    def check(self, options: SamplingOptions) -> None:
        """400 when xgrammar cannot compile what `options` constrain the output to."""
        structured = self._tooling(options).structured
        if structured is None:
            return
        try:
            # vLLM's own check, as its engine runs it on each request (on a copy: it rewrites
            # `choice` into a grammar in place).
            validate_xgrammar_grammar(SamplingParams(structured_outputs=copy.copy(structured)))
        except (VLLMValidationError, ValueError) as exc:
            raise InvalidRequestError(f"The output constraint cannot be compiled: {exc}") from None

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; `add_special_tokens` adds what the tokenizer adds (e.g. BOS)."""
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        adapter: AdapterRef | None = None,
    ) -> AsyncIterator[list[ChoiceDelta]]:
        """Stream deltas of every choice until all finish; closing early aborts the request."""
        # vLLM refuses n > 1 with greedy sampling; OpenAI allows it. Greedy choices are all the
        # same, so generate one and send it as each of the n choices.
        copies = options.n if options.temperature == 0 else 1
        tooling = self._tooling(options)
        params = _sampling_params(options, options.n // copies, tooling)
        stream = self._llm.generate(
            tokens_input(prompt_token_ids),
            params,
            request_id,
            lora_request=None if adapter is None else _lora_request(adapter),
        )
        try:
            async for output in stream:
                yield [
                    delta
                    for out in output.outputs
                    for delta in _choice_deltas(
                        out, copies, options.logprobs, tooling.parse(out, prompt_token_ids)
                    )
                ]
        except VllmEngineDeadError:
            raise EngineDeadError() from None
        except Exception:
            # vLLM keeps a request it failed to hand to its engine core in its books (counted
            # as unfinished for good) unless it is aborted.
            await self._llm.abort(request_id)
            raise
        finally:
            # AsyncLLM.generate aborts the request in the engine when it is closed unfinished.
            await stream.aclose()

    def _tooling(self, options: SamplingOptions) -> "_Tooling":
        """The structured-output constraint of a request and, with tools, its call parsers."""
        tools = options.tools
        if tools is None or tools.choice == "none":
            # With "none" the tools are in the prompt but nothing is parsed: any call markup the
            # model writes stays text, as vLLM's server does.
            return _Tooling(_constraint_params(options.constraint), None, self._parser_cls, None)
        request = ChatCompletionRequest.model_validate(_tool_request_fields(tools, options))
        request = self._parser_cls(self._tokenizer, request.tools).adjust_request(request)
        return _Tooling(
            _bounded(request.structured_outputs),
            request,
            self._parser_cls,
            self._tokenizer,
            skip_special_tokens=request.skip_special_tokens,
        )

    async def abort(self, request_ids: list[str]) -> None:
        """Stop these requests now; each one's stream ends with finish_reason "abort"."""
        await self._llm.abort(request_ids)

    async def load_adapter(self, adapter: AdapterRef) -> None:
        """Load `adapter` into the engine now; `InvalidAdapterError` when vLLM refuses it."""
        try:
            await self._llm.add_lora(_lora_request(adapter))
        except Exception as exc:
            # The engine core reports a refused adapter (bad rank, DoRA, unknown modules, ...)
            # as a plain exception carrying vLLM's reason; the engine itself keeps running.
            raise InvalidAdapterError(
                f"The engine refused adapter '{adapter.name}': {exc}", "model"
            ) from exc

    async def remove_adapter(self, lora_id: int) -> None:
        """Drop the adapter with `lora_id` from the engine's caches (no-op if not loaded)."""
        await self._llm.remove_lora(lora_id)

    def stats(self) -> EngineStats:
        """Current load: the front-end count is exact; scheduler figures are from its last step."""
        last = self._scheduler_stats.latest
        return EngineStats(
            num_unfinished_requests=self._llm.get_num_unfinished_requests(),
            num_running_requests=last.num_running_reqs,
            num_waiting_requests=last.num_waiting_reqs,
            kv_cache_usage=last.kv_cache_usage,
            prefix_cache_queries=self._scheduler_stats.prefix_cache_queries,
            prefix_cache_hits=self._scheduler_stats.prefix_cache_hits,
        )

    def is_alive(self) -> bool:
        """False once the engine core has died; vLLM's monitor thread notices at once."""
        return not self._llm.errored

    def shutdown(self, wait: bool = True) -> None:
        """Stop the engine core and its worker processes (see `Engine.shutdown`)."""
        # timeout=0 is what vLLM's own run_batch uses once its results are in: the processes
        # are killed instead of being given ~5 s to exit on their own.
        self._llm.shutdown(timeout=None if wait else 0)


def install_cpu_lora_fix() -> None:
    """Replace vLLM's PyTorch LoRA kernels (its CPU path) with ones that are right and faster.

    Registered as a vLLM general plugin (pyproject entry point), so vLLM runs it in every one of
    its processes, the model worker included. vLLM 0.32's kernels gather one adapter matrix per
    token (`weights[indices]`), and tokens of requests without an adapter carry slot -1, which
    PyTorch reads as the *last* slot: once an adapter occupies it, base-model requests batched
    with adapter requests are served with that adapter (the CUDA kernels skip -1). These
    kernels multiply each slot's tokens by its matrix once and leave slot -1 tokens alone.
    """
    from vllm.lora.ops import torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    if getattr(lora_ops.bgmv_shrink, "kangaroo_fixed", False):
        return
    kernels = {
        "bgmv_shrink": _bgmv_shrink,
        "bgmv_expand": _bgmv_expand,
        "bgmv_expand_slice": _bgmv_expand_slice,
    }
    for name, kernel in kernels.items():
        kernel.kangaroo_fixed = True  # type: ignore[attr-defined]
        # The sgmv (prefill) kernels call lora_ops' globals; the CPU wrapper holds its own.
        for module in (lora_ops, torch_ops, punica_cpu):
            setattr(module, name, kernel)


def _per_slot(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """Row t of the result is inputs[t] @ weights[indices[t]].T; zero where indices[t] < 0."""
    import torch

    stacked = weights.squeeze(1) if weights.dim() == 4 else weights  # (slots, out, in)
    x = inputs.to(dtype)
    out = torch.zeros(x.shape[0], stacked.shape[1], dtype=dtype, device=x.device)
    for slot in torch.unique(indices).tolist():
        if slot >= 0:
            rows = indices == slot
            out[rows] = x[rows] @ stacked[slot].to(dtype).T
    return out


def _bgmv_shrink(
    inputs: Any, lora_a_weights: Any, output_tensor: Any, indices: Any, scaling: float = 1.0
) -> None:
    outputs = _per_slot(inputs, lora_a_weights, indices, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def _bgmv_expand(
    inputs: Any, lora_b_weights: Any, output_tensor: Any, indices: Any, add_inputs: bool = True
) -> None:
    outputs = _per_slot(inputs, lora_b_weights, indices, output_tensor.dtype)
    # As vLLM's: one row of output may stand for all rows, and paddings may differ in width.
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    width = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :width] += outputs[:limit, :width]
    else:
        output_tensor[:, :width] = outputs[:limit, :width]


def _bgmv_expand_slice(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    indices: Any,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = _per_slot(inputs, lora_b_weights, indices, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def checkpoint_dtype(model_path: str) -> str:
    """The dtype a model folder's weights were saved in; "auto" (vLLM decides) when unknown.

    vLLM's own "auto" serves float32 checkpoints in half precision, which on CPUs is the slow
    path (3x slower for the demo model); serving what the checkpoint holds avoids that.
    """
    config = Path(model_path) / "config.json"
    if not config.is_file():
        return "auto"
    fields = json.loads(config.read_text())
    saved = fields.get("dtype") or fields.get("torch_dtype")
    return saved if saved in ("float32", "bfloat16", "float16") else "auto"


def _lora_request(adapter: AdapterRef) -> LoRARequest:
    return LoRARequest(adapter.name, adapter.lora_id, adapter.path)


def render_chat_template(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None = None,
    tool_format: str = chat_format.GENERIC,
) -> str:
    """Apply `tokenizer`'s chat template; 400 when the template refuses the messages.

    Templates reject what their model cannot take (a role, an order of turns) by raising
    from Jinja: that is the client's request, not our failure.
    """
    try:
        return chat_format.render(tokenizer, messages, tools, tool_format)
    except chat_format.TemplateError as exc:
        raise InvalidRequestError(
            f"The model's chat template rejected the messages: {exc}", "messages"
        ) from None


def resolve_tool_format(setting: str, tokenizer: Any) -> str:
    """The tool-call format to serve: the setting's parser, or (`auto`) the template's own.

    A name vLLM does not know stops start-up, naming the names it does.
    """
    if setting == "auto":
        return chat_format.detect_tool_format(tokenizer)
    known = ToolParserManager.list_registered()
    if setting != chat_format.GENERIC and setting not in known:
        raise SettingsError(
            f"Setting 'tool_call_parser' has value {setting!r}: not a vLLM tool parser. "
            f"Use auto, {chat_format.GENERIC} or one of: {', '.join(known)}."
        )
    return setting


@dataclass
class _Tooling:
    """How one request's output is constrained, and (with tools) parsed into calls."""

    structured: StructuredOutputsParams | None
    request: ChatCompletionRequest | None  # vLLM's view of the request, for its parsers
    parser_cls: type[Parser]
    tokenizer: Any
    skip_special_tokens: bool = True
    parsers: dict[int, Parser] = field(default_factory=dict)  # one per output: they keep state

    def parse(self, out: Any, prompt_ids: list[int]) -> tuple[str, tuple[ToolCallDelta, ...]]:
        """An output's new content and tool-call deltas (all text as content without tools)."""
        if self.request is None:
            return out.text, ()
        parser = self.parsers.get(out.index)
        if parser is None:
            parser = self.parsers[out.index] = self.parser_cls(self.tokenizer, self.request.tools)
        message = parser.parse_delta(
            out.text,
            list(out.token_ids),
            self.request,
            prompt_ids,
            finished=out.finish_reason is not None,
        )
        if message is None:
            return "", ()
        calls = tuple(
            ToolCallDelta(
                call.index,
                call.id,
                call.function.name if call.function else None,
                (call.function.arguments if call.function else None) or "",
            )
            for call in message.tool_calls or ()
        )
        return message.content or "", calls


def _tool_request_fields(tools: ToolUse, options: SamplingOptions) -> dict[str, Any]:
    """A request as vLLM's parsers read it: the tools, the choice, the output format."""
    choice: Any = tools.choice
    if choice == "function":
        choice = {"type": "function", "function": {"name": tools.function}}
    fields: dict[str, Any] = {
        "messages": [{"role": "user", "content": ""}],  # parsers read tools, not messages
        "tools": list(tools.tools),
        "tool_choice": choice,
        "parallel_tool_calls": tools.parallel,
    }
    constraint = options.constraint
    # Only "auto" leaves room for an answer: a forced call is all this turn produces.
    if constraint is not None and tools.choice == "auto":
        if constraint.json_schema is not None:
            fields["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": constraint.json_schema},
            }
        else:
            fields["structured_outputs"] = _constraint_fields(constraint)
    return fields


def _constraint_fields(constraint: OutputConstraint) -> dict[str, Any]:
    if constraint.regex is not None:
        return {"regex": constraint.regex}
    if constraint.choice is not None:
        return {"choice": list(constraint.choice)}
    return {"grammar": constraint.grammar}


def _constraint_params(constraint: OutputConstraint | None) -> StructuredOutputsParams | None:
    if constraint is None:
        return None
    if constraint.json_schema is not None:
        # As a structural tag: the only per-request way to bound whitespace inside the JSON.
        tag = {"type": "structural_tag", "format": _json_format(constraint.json_schema)}
        return StructuredOutputsParams(structural_tag=json.dumps(tag))
    return StructuredOutputsParams(**_constraint_fields(constraint))


def _json_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": MAX_JSON_WHITESPACE}


def _bounded(structured: StructuredOutputsParams | None) -> StructuredOutputsParams | None:
    """`structured` with whitespace bounded in every JSON part (tool-call arguments too)."""
    if structured is None:
        return None
    if structured.json is not None:
        schema = structured.json
        schema = schema if isinstance(schema, dict) else json.loads(schema)
        return _constraint_params(OutputConstraint(json_schema=schema))
    if structured.structural_tag is None:
        return structured
    tag = json.loads(structured.structural_tag)
    _bound_json_nodes(tag)
    return StructuredOutputsParams(structural_tag=json.dumps(tag))


def _bound_json_nodes(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "json_schema":
            node["max_whitespace_cnt"] = MAX_JSON_WHITESPACE
        for value in node.values():
            _bound_json_nodes(value)
    elif isinstance(node, list):
        for value in node:
            _bound_json_nodes(value)


def _sampling_params(options: SamplingOptions, n: int, tooling: _Tooling) -> SamplingParams:
    return SamplingParams(
        n=n,
        temperature=options.temperature,
        top_p=options.top_p,
        top_k=options.top_k,
        min_p=options.min_p,
        seed=options.seed,
        stop=list(options.stop),
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        repetition_penalty=options.repetition_penalty,
        max_tokens=options.max_tokens,
        logprobs=options.logprobs,
        logit_bias=options.logit_bias or None,
        ignore_eos=options.ignore_eos,
        structured_outputs=tooling.structured,
        # Tool-call markers are special tokens in some models: the parser must see them.
        skip_special_tokens=tooling.skip_special_tokens,
        # Tool calls are parsed by vLLM's streaming parsers, delta by delta.
        output_kind=(
            RequestOutputKind.FINAL_ONLY
            if options.whole and tooling.request is None
            else RequestOutputKind.DELTA
        ),
        skip_clone=True,  # made for this request alone: vLLM need not deep-copy it
    )


def _choice_deltas(
    out: Any,
    copies: int,
    num_logprobs: int | None,
    parsed: tuple[str, tuple[ToolCallDelta, ...]],
) -> list[ChoiceDelta]:
    """One vLLM `CompletionOutput` as `copies` consecutive choices (1 unless greedy n > 1)."""
    token_ids = tuple(out.token_ids)
    logprobs = _logprobs(out.logprobs, num_logprobs)
    text, calls = parsed
    finish = out.finish_reason
    return [
        ChoiceDelta(out.index * copies + n, text, token_ids, logprobs, finish, calls)
        for n in range(copies)
    ]


def _logprobs(positions: Any, num_top: int | None) -> tuple[TokenLogprob, ...] | None:
    """Convert vLLM's per-position {token_id: Logprob} maps (sampled token + top-k)."""
    if positions is None or num_top is None:
        return None
    result = []
    for position, sampled_id in _with_sampled_ids(positions):
        sampled = position[sampled_id]
        top = sorted(
            (lp for lp in position.values() if lp.rank is not None and lp.rank <= num_top),
            key=lambda lp: lp.rank,
        )
        result.append(
            TokenLogprob(
                token=sampled.decoded_token or "",
                logprob=sampled.logprob,
                top=tuple((lp.decoded_token or "", lp.logprob) for lp in top),
            )
        )
    return tuple(result)


def _with_sampled_ids(positions: Any) -> list[tuple[dict[int, Any], int]]:
    # vLLM puts the sampled token first in each position's map.
    return [(position, next(iter(position))) for position in positions]


class _LatestSchedulerStats:
    """Keeps the scheduler stats of the engine's most recent step, and prefix-cache totals."""

    def __init__(self) -> None:
        self.latest = SchedulerStats()
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0

    def record(self, stats: SchedulerStats) -> None:
        """Take one step's stats."""
        self.latest = stats
        self.prefix_cache_queries += stats.prefix_cache_stats.queries
        self.prefix_cache_hits += stats.prefix_cache_stats.hits

    def logger_factory(self, vllm_config: Any, engine_index: int = 0) -> StatLoggerBase:
        holder = self

        class _Recorder(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):  # type: ignore[no-untyped-def]
                if scheduler_stats is not None:
                    holder.record(scheduler_stats)

            def log_engine_initialized(self) -> None:
                pass

        return _Recorder(vllm_config, engine_index)
