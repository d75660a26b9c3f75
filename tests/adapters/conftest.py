"""Adapters made in seconds on the tiny base model, good and bad, for the registry's tests."""

import json
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.adapter import MANIFEST_NAME, base_fingerprint


def make_adapter(
    base: Path,
    out: Path,
    *,
    seed: int = 0,
    trained: bool = True,
    manifest: bool = True,
    **lora: Any,
) -> Path:
    """A PEFT LoRA adapter folder for `base`; `trained` gives lora_B random (non-zero) weights.

    `lora` overrides the LoraConfig (r=4, alpha 8, q_proj and v_proj by default).
    """
    values: dict[str, Any] = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(**values | lora))
    if trained:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.5)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
    if manifest:
        write_manifest(out, fingerprint(base))
    return out


def fingerprint(base: Path) -> str:
    """The base fingerprint finetune writes into its manifests."""
    config = json.loads((base / "config.json").read_text())
    return base_fingerprint(config, AutoTokenizer.from_pretrained(base))


def write_manifest(folder: Path, base_fp: str, **extra: Any) -> None:
    """A minimal finetune manifest naming `base_fp` as the base."""
    manifest = {"kind": "lora", "base_model": {"fingerprint": base_fp}, "final_eval_loss": 1.25}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest | extra))
