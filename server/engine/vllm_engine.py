"""The vLLM engine behind the `generation.Engine` seam. The only module that imports vLLM."""

import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import jinja2
from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.envs import enable_envs_cache
from vllm.inputs import tokens_input
from vllm.lora.request import LoRARequest
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind
from vllm.utils.gc_utils import freeze_gc_heap
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError as VllmEngineDeadError
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import SchedulerStats

from server.engine.generation import (
    AdapterRef,
    ChoiceDelta,
    EngineStats,
    SamplingOptions,
    TokenLogprob,
)
from server.errors import EngineDeadError, InvalidAdapterError, InvalidRequestError
from server.settings import Settings

logger = logging.getLogger(__name__)


class VllmEngine:
    """An in-process vLLM `AsyncLLM` (continuous batching, paged KV cache)."""

    def __init__(self, llm: AsyncLLM, scheduler_stats: "_LatestSchedulerStats", model_path: str):
        self._llm = llm
        self._scheduler_stats = scheduler_stats
        self._tokenizer = llm.get_tokenizer()
        self.model_path = model_path
        self.max_model_len = llm.model_config.max_model_len
        self.vocab_size = llm.model_config.get_vocab_size()

    @classmethod
    def start(cls, settings: Settings, model_path: str) -> "VllmEngine":
        """Build the engine and start its worker processes (blocks for the model load)."""
        if current_platform.is_cpu():
            # Read by vLLM's CPU worker when it sizes the KV cache; workers inherit the env.
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gib)
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
            enable_lora=settings.enable_lora,
            max_lora_rank=settings.max_lora_rank,
            max_loras=settings.max_loras,
            max_cpu_loras=settings.max_cpu_loras,
            disable_log_stats=True,  # our own stat logger below still receives every step
        )
        stats = _LatestSchedulerStats()
        llm = AsyncLLM.from_engine_args(args, stat_loggers=[stats.logger_factory])
        # Per-request costs of this process, paid in every burst of arrivals: vLLM reads its
        # env vars anew on each access until told they are final (its engine processes do
        # this, its API server does not), and objects made at start-up need not be scanned by
        # every full garbage collection (vLLM's server freezes them too).
        enable_envs_cache()
        freeze_gc_heap()
        return cls(llm, stats, model_path)

    def render_chat(self, messages: Sequence[dict[str, Any]]) -> str:
        """Render chat messages with the model's own chat template, ready for a reply."""
        return render_chat_template(self._tokenizer, messages)

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
        params = _sampling_params(options, n=options.n // copies)
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
                    for delta in _choice_deltas(out, copies, options.logprobs)
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

    def shutdown(self) -> None:
        """Stop the engine core and its worker processes."""
        self._llm.shutdown()


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


def render_chat_template(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> str:
    """Apply `tokenizer`'s chat template; 400 when the template refuses the messages.

    Templates reject what their model cannot take (a role, an order of turns) by raising
    from Jinja: that is the client's request, not our failure.
    """
    try:
        prompt: str = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
    except jinja2.TemplateError as exc:
        raise InvalidRequestError(
            f"The model's chat template rejected the messages: {exc}", "messages"
        ) from None
    return prompt


def _sampling_params(options: SamplingOptions, n: int) -> SamplingParams:
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
        output_kind=RequestOutputKind.DELTA,
        skip_clone=True,  # made for this request alone: vLLM need not deep-copy it
    )


def _choice_deltas(out: Any, copies: int, num_logprobs: int | None) -> list[ChoiceDelta]:
    """One vLLM `CompletionOutput` as `copies` consecutive choices (1 unless greedy n > 1)."""
    token_ids = tuple(out.token_ids)
    logprobs = _logprobs(out.logprobs, num_logprobs)
    return [
        ChoiceDelta(out.index * copies + copy, out.text, token_ids, logprobs, out.finish_reason)
        for copy in range(copies)
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
