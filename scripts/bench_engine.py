"""The ceiling: vLLM's AsyncLLM driven in-process with the benchmark's requests, no HTTP at all.

Prompts are rendered with the model's chat template and tokenized here, as the servers do, and
each request is timed exactly like a streamed HTTP request (first text, gaps between outputs).
"""

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator

from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.inputs import tokens_input
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from scripts.loadgen import RequestRecord, Sender, Workload


@contextlib.asynccontextmanager
async def engine_sender(
    model_dir: str, engine_args: dict[str, object], workload: Workload, kv_cache_gib: int
) -> AsyncIterator[Sender]:
    """A sender that runs prompts through an in-process AsyncLLM, started here, stopped after."""
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model_dir, **engine_args))
    tokenizer = llm.get_tokenizer()
    params = SamplingParams(
        max_tokens=workload.output_tokens,
        temperature=workload.temperature,
        ignore_eos=True,
        output_kind=RequestOutputKind.DELTA,
    )

    async def send(prompt: str) -> RequestRecord:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer.encode(text, add_special_tokens=False)
        record = RequestRecord(start=time.perf_counter())
        async for output in llm.generate(tokens_input(ids), params, uuid.uuid4().hex):
            completion = output.outputs[0]
            record.output_tokens += len(completion.token_ids)
            if completion.text:
                record.mark_content()
        record.end = time.perf_counter()
        record.ok = True
        return record

    try:
        yield send
    finally:
        llm.shutdown()
