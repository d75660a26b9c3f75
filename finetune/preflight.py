"""vLLM's rules for a LoRA adapter, checked before the first training step.

vLLM refuses adapters with DoRA, `modules_to_save`, trained biases or a rank above the server's
`max_lora_rank` (one of LORA_RANKS; an adapter's own rank may be any r up to it), and it
silently serves the base model when no target module matches (vllm#55193). Catching these
before training saves the run; tests/finetune/test_vllm_serving.py keeps these rules true to
the vLLM version we pin.
"""

from typing import Any

from torch import nn

from server.contract import LORA_RANKS, KangarooError, server_rank_for


class PreflightError(KangarooError):
    """The adapter as configured would not load in vLLM; the message says what to change."""


def check_lora(lora_config: Any, model: nn.Module, tokenizer: Any) -> None:
    """Raise `PreflightError` listing every way `lora_config` on `model` breaks vLLM's rules."""
    problems = [
        *_config_problems(lora_config),
        *_target_problems(list(lora_config.target_modules), model),
    ]
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        problems.append(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding {vocab}: "
            "adapters cannot add tokens in vLLM; train without new tokens"
        )
    if problems:
        rank = server_rank_for(min(lora_config.r, LORA_RANKS[-1]))
        raise PreflightError(
            "This adapter would not load in vLLM:\n  "
            + "\n  ".join(problems)
            + f"\nOnce fixed, serve it with --enable-lora --max-lora-rank {rank} (or higher)."
        )


def _config_problems(config: Any) -> list[str]:
    problems = []
    if config.r > LORA_RANKS[-1]:
        problems.append(
            f"rank {config.r} is above the largest max_lora_rank vLLM offers "
            f"({LORA_RANKS[-1]}): use --rank {LORA_RANKS[-1]} or less"
        )
    if config.modules_to_save:
        problems.append(f"modules_to_save {config.modules_to_save} is not supported: remove it")
    if config.use_dora:
        problems.append("DoRA is not supported: turn use_dora off")
    if config.bias != "none":
        problems.append(f"bias={config.bias!r} is not supported: use bias='none'")
    return problems


def _target_problems(targets: list[str], model: nn.Module) -> list[str]:
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if _in_blocks(name, m)}
    problems = [
        f"target module {name!r} is not a linear layer of the model's blocks "
        f"(it has: {', '.join(sorted(linear))})"
        for name in targets
        if name not in linear
    ]
    if not targets:
        problems.append("no target modules: the adapter would change nothing")
    return problems


def _in_blocks(name: str, module: nn.Module) -> bool:
    # vLLM applies LoRA to the linear layers of the decoder blocks, not to the embeddings or
    # the output head (those would need modules_to_save).
    return isinstance(module, nn.Linear) and ".layers." in f".{name}."
