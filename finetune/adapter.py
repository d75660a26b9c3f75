"""Writing the adapter folder, whose names and manifest `server.contract` fixes for both sides.

    OUT/
      adapter_config.json        PEFT LoRA config (r, lora_alpha, target_modules, ...)
      adapter_model.safetensors  only lora_A / lora_B tensors
      kangaroo-adapter.json      the manifest: base fingerprint, data, losses
      metrics.jsonl, loss.png    training record

A `--full` run writes a model folder instead (config, weights, tokenizer) with the same
manifest, `kind: "full"`. Folders are assembled under a temporary name and renamed into place,
so a crash never leaves a folder that looks complete.
"""

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

from server.contract import MANIFEST_FORMAT, MANIFEST_NAME, read_manifest


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
    """Write the manifest into `folder`, replacing any earlier one in one step."""
    text = json.dumps({"format": MANIFEST_FORMAT, **manifest}, indent=2, ensure_ascii=False)
    tmp = folder / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(text + "\n")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST_NAME)


def update_manifest(folder: Path, **fields: Any) -> None:
    """Set `fields` in the manifest of a finished folder (the accuracy report comes last)."""
    manifest = read_manifest(folder)
    manifest.pop("format", None)
    write_manifest(folder, {**manifest, **fields})


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
