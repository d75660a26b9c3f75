"""The preflight stops a run whose adapter vLLM would refuse, and says what to change."""

from pathlib import Path

import pytest
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.preflight import PreflightError, check_lora, server_rank_for


@pytest.fixture(scope="module")
def base(tiny_base: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_base), AutoTokenizer.from_pretrained(tiny_base)


def lora(**overrides) -> LoraConfig:
    values = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "bias": "none"}
    return LoraConfig(**{**values, **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"r": 1024}, "rank 1024 is above the largest max_lora_rank vLLM offers (512)"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save ['lm_head'] is not supported"),
        ({"use_dora": True}, "DoRA is not supported"),
        ({"bias": "lora_only"}, "bias='lora_only' is not supported: use bias='none'"),
        ({"target_modules": ["q_proj", "qkv"]}, "target module 'qkv' is not a linear layer"),
        ({"target_modules": ["embed_tokens"]}, "target module 'embed_tokens'"),
        ({"target_modules": ["lm_head"]}, "target module 'lm_head'"),
    ],
)
def test_each_rule_stops_the_run_naming_the_fix(base, overrides, message: str) -> None:
    model, tokenizer = base
    with pytest.raises(PreflightError) as caught:
        check_lora(lora(**overrides), model, tokenizer)
    assert message in str(caught.value)
    assert "--max-lora-rank" in str(caught.value)


def test_a_good_config_passes(base) -> None:
    model, tokenizer = base
    check_lora(lora(r=4), model, tokenizer)  # any rank up to the server's max_lora_rank loads
    check_lora(lora(target_modules=["gate_proj", "up_proj", "down_proj"]), model, tokenizer)


def test_added_tokens_are_refused(base, tiny_base: Path) -> None:
    model, _ = base
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    tokenizer.add_tokens([f"<new{i}>" for i in range(model.config.vocab_size)])
    with pytest.raises(PreflightError, match="adapters cannot add tokens"):
        check_lora(lora(), model, tokenizer)


def test_server_rank_is_the_smallest_setting_that_fits() -> None:
    assert [server_rank_for(r) for r in (1, 2, 8, 9, 300, 512)] == [1, 8, 8, 16, 320, 512]
