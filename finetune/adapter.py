"""The adapter folder: the contract between `finetune` (the one writer) and the server.

    OUT/
      adapter_config.json        PEFT LoRA config (r, lora_alpha, target_modules, ...)
      adapter_model.safetensors  only lora_A / lora_B tensors
      kangaroo-adapter.json      the manifest (MANIFEST_NAME): base fingerprint, data, losses
      metrics.jsonl, loss.png    training record

A `--full` run writes a model folder instead (config, weights, tokenizer) with the same
manifest, `kind: "full"`. Folders are assembled under a temporary name and renamed into place,
so a crash never leaves a folder that looks complete.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST_NAME = "kangaroo-adapter.json"
MANIFEST_FORMAT = 1
# Config keys that change with the library that saved the model, not with the model.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "dtype", "torch_dtype"}


def base_fingerprint(config: dict[str, Any], tokenizer: Any) -> str:
    """sha256 over the base model's config, vocabulary and chat template.

    An adapter is only meaningful on the base it was trained on: the server compares this with
    the fingerprint of the model it serves.
    """
    digest = hashlib.sha256()
    stable = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    for part in (
        stable,
        sorted(tokenizer.get_vocab().items()),
        tokenizer.all_special_tokens,
        tokenizer.chat_template or "",
    ):
        digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the result."""
    versions = {}
    for name in ("kangaroo", "torch", "transformers", "peft", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest into `folder`."""
    text = json.dumps({"format": MANIFEST_FORMAT, **manifest}, indent=2, ensure_ascii=False)
    (folder / MANIFEST_NAME).write_text(text + "\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an adapter or model folder written by `finetune`."""
    manifest: dict[str, Any] = json.loads((folder / MANIFEST_NAME).read_text())
    return manifest


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; rename it to `target` if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        yield tmp
        _fsync_files(tmp)
        if target.exists():
            target.rmdir()  # settings only let an empty folder stand where the output goes
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_files(folder: Path) -> None:
    """Flush every file, so the rename never publishes a folder whose data is not on disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
