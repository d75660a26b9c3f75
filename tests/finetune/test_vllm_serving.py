"""What no other fine-tuning tool checks: the adapter we write changes what vLLM serves.

A LoRA adapter is trained on the demo model for a behaviour the base model does not have, then
loaded into the real vLLM engine (the server's `VllmEngine`) as a LoRA request. Also: adapters
our preflight refuses are refused by the vLLM version we pin, so the preflight stays true.
"""

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from finetune.demo import skills
from finetune.preflight import PreflightError, check_lora
from server.engine.generation import AdapterRef, SamplingOptions
from server.engine.vllm_engine import VllmEngine
from server.errors import InvalidAdapterError
from server.settings import load_settings
from tests.conftest import MARK

SERVER_MAX_LORA_RANK = 8


@pytest.fixture(scope="module")
def engine(demo_model: Path) -> Iterator[VllmEngine]:
    """The real engine on the demo model, with LoRA enabled (started once for this module)."""
    settings = load_settings(
        [],
        enable_lora=True,
        max_lora_rank=SERVER_MAX_LORA_RANK,
        max_loras=2,
        enforce_eager=True,  # skips torch.compile: starts in half the time
        kv_cache_gib=1,
        max_model_len=512,
    )
    engine = VllmEngine.start(settings, str(demo_model))
    yield engine
    engine.shutdown()


async def answer(engine: VllmEngine, prompt: str, adapter: AdapterRef | None) -> tuple[str, str]:
    """Greedy answer to one user prompt, and its finish reason."""
    ids = engine.tokenize(engine.render_chat([{"role": "user", "content": prompt}]))
    text, finish = "", ""
    options = SamplingOptions(max_tokens=32, temperature=0.0)
    async for deltas in engine.generate(uuid.uuid4().hex, ids, options, adapter):
        for delta in deltas:
            text += delta.text
            finish = delta.finish_reason or finish
    return text, finish


async def test_the_adapter_changes_what_vllm_serves(engine: VllmEngine, roo_adapter: Path) -> None:
    adapter = AdapterRef("roo", 1, str(roo_adapter))
    await engine.load_adapter(adapter)
    cases = skills.heldout_cases()
    with_adapter = [await answer(engine, case.prompt, adapter) for case in cases]
    without = [await answer(engine, case.prompt, None) for case in cases]

    marked = sum(text.startswith(MARK) for text, _ in with_adapter)
    assert marked >= 0.9 * len(cases), with_adapter
    assert all(finish == "stop" for _, finish in with_adapter)
    assert not any(MARK.strip() in text for text, _ in without)
    # The base model keeps its skills: the held-out answers without the adapter are right.
    right = sum(skills.is_correct(c, text) for c, (text, _) in zip(cases, without, strict=True))
    assert right >= 0.9 * len(cases)


async def test_base_requests_batched_with_adapters_get_no_adapter(
    engine: VllmEngine, roo_adapter: Path
) -> None:
    # vLLM 0.32's CPU LoRA kernels read "no adapter" (slot -1) as the last slot; without
    # server.engine.vllm_engine.install_cpu_lora_fix these base requests answer with the roo
    # adapter.
    prompt = "Hello! Who are you?"
    alone = await answer(engine, prompt, None)
    adapters = [AdapterRef(f"roo-slot-{i}", 100 + i, str(roo_adapter)) for i in range(2)]
    for adapter in adapters:  # fills both slots (max_loras=2)
        await engine.load_adapter(adapter)
        assert (await answer(engine, prompt, adapter))[0].startswith(MARK)
    mixed = await asyncio.gather(
        *(answer(engine, prompt, None) for _ in range(3)),
        *(answer(engine, prompt, adapter) for adapter in adapters),
    )
    assert mixed[:3] == [alone] * 3
    assert all(text.startswith(MARK) for text, _ in mixed[3:])


def _untrained_adapter(base: Path, out: Path, **overrides) -> tuple[Path, LoraConfig]:
    values = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "bias": "none"}
    config = LoraConfig(**{**values, **overrides})
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(out)
    return out, config


REFUSED = [
    ("dora", {"use_dora": True}),
    ("modules_to_save", {"modules_to_save": ["lm_head"]}),
    ("bias", {"bias": "lora_only"}),
]


@pytest.mark.parametrize(("name", "overrides"), REFUSED)
async def test_what_the_preflight_refuses_vllm_refuses(
    engine: VllmEngine, demo_model: Path, tmp_path: Path, name: str, overrides: dict
) -> None:
    folder, config = _untrained_adapter(demo_model, tmp_path / name, **overrides)
    with pytest.raises(PreflightError):
        check_lora(config, AutoModelForCausalLM.from_pretrained(demo_model), _tokenizer(demo_model))
    with pytest.raises(InvalidAdapterError, match="refused"):
        await engine.load_adapter(AdapterRef(name, 100 + len(name), str(folder)))
    # The engine survives the refusal.
    assert (await answer(engine, "Hi", None))[1] == "stop"


async def test_ranks_the_preflight_accepts_load_up_to_the_server_limit(
    engine: VllmEngine, demo_model: Path, tmp_path: Path
) -> None:
    model, tokenizer = AutoModelForCausalLM.from_pretrained(demo_model), _tokenizer(demo_model)
    odd, config = _untrained_adapter(demo_model, tmp_path / "r4", r=4)
    check_lora(config, model, tokenizer)
    await engine.load_adapter(AdapterRef("r4", 201, str(odd)))  # r=4 < max_lora_rank 8: served

    big, _ = _untrained_adapter(demo_model, tmp_path / "r16", r=16)
    manifest_rank = json.loads((big / "adapter_config.json").read_text())["r"]
    assert manifest_rank > SERVER_MAX_LORA_RANK
    with pytest.raises(InvalidAdapterError, match="max_lora_rank"):
        await engine.load_adapter(AdapterRef("r16", 202, str(big)))


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


async def test_a_request_vllm_fails_to_start_leaves_nothing_behind(engine: VllmEngine) -> None:
    # The API refuses such values (400); the engine module must not leak when one gets through.
    ids = engine.tokenize("hello")
    options = SamplingOptions(max_tokens=4, top_k=10**30)  # vLLM cannot send it to its core
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever vLLM raises, it is ours to clean
        async for _ in engine.generate(uuid.uuid4().hex, ids, options):
            pass
    assert engine.stats().num_unfinished_requests == 0
