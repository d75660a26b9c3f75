"""Helpers for the adapter registry's tests (adapters come from scripts/bench_adapters.py)."""

import json
from pathlib import Path
from typing import Any

from server.contract import MANIFEST_NAME


def write_manifest(folder: Path, base_fp: str, **extra: Any) -> None:
    """A minimal finetune manifest naming `base_fp` as the base model's fingerprint."""
    manifest = {"kind": "lora", "base_model": {"fingerprint": base_fp}, "final_eval_loss": 1.25}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest | extra))
