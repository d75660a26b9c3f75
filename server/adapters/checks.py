"""Checks an adapter folder must pass before the server registers it (no engine involved).

Every refusal is an `APIError` whose message names the problem: files, config, tensors, rank,
target modules, base model, size. The last check, that the adapter changes the model's output,
needs the engine and lives in `server.adapters.registry`.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from server.contract import (
    ADAPTER_FILES,
    CONFIG_NAME,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    base_fingerprint,
)
from server.errors import AdapterConflictError, InvalidAdapterError, RequestTooLargeError

REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME)
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class BaseModelInfo:
    """What adapters are checked against: the served model and the server's limits."""

    fingerprint: str
    linear_shapes: dict[str, tuple[int, int]]  # module path -> (out_features, in_features)
    max_lora_rank: int
    max_bytes: int


@dataclass(frozen=True)
class AdapterInfo:
    """What the checks learnt about an adapter folder."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    size_bytes: int
    manifest: dict[str, Any] | None  # finetune's manifest, when the folder has one

    @property
    def eval_loss(self) -> float | None:
        """The final eval loss recorded by finetune, if any."""
        return None if self.manifest is None else self.manifest.get("final_eval_loss")

    @property
    def eval_accuracy(self) -> dict[str, Any] | None:
        """finetune's accuracy report in vLLM (tuned vs base, exact match), if any."""
        return None if self.manifest is None else self.manifest.get("eval_accuracy")


def inspect_base(model_dir: Path, max_lora_rank: int, max_bytes: int) -> BaseModelInfo:
    """Fingerprint and linear-layer shapes of the served model folder."""
    from transformers import AutoTokenizer

    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    shapes: dict[str, tuple[int, int]] = {}
    for weights in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(weights), framework="pt") as f:
            names = f.keys()  # safe_open is not iterable
            for key in names:
                shape = f.get_slice(key).get_shape()
                if key.endswith(".weight") and len(shape) == 2:
                    shapes[key.removesuffix(".weight")] = (int(shape[0]), int(shape[1]))
    return BaseModelInfo(base_fingerprint(config, tokenizer), shapes, max_lora_rank, max_bytes)


def check_adapter(folder: Path, base: BaseModelInfo) -> AdapterInfo:
    """Check an adapter folder against `base`; what it learnt, or the error naming the problem."""
    size = _check_files(folder, base.max_bytes)
    config = _read_json(folder / CONFIG_NAME)
    rank, alpha = _check_config(config, base.max_lora_rank)
    modules = _check_tensors(folder / WEIGHTS_NAME, rank, config, base.linear_shapes)
    manifest = None
    if (folder / MANIFEST_NAME).is_file():
        manifest = _read_json(folder / MANIFEST_NAME)
        _check_manifest(manifest, base.fingerprint)
    return AdapterInfo(rank, alpha, tuple(sorted(modules)), size, manifest)


def _check_files(folder: Path, max_bytes: int) -> int:
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise InvalidAdapterError(f"The adapter has no {name}.")
    present = [folder / name for name in ADAPTER_FILES if (folder / name).is_file()]
    size = sum(path.stat().st_size for path in present)
    if size > max_bytes:
        raise RequestTooLargeError(
            f"The adapter is {size:,} bytes; this server accepts at most {max_bytes:,} "
            "(setting adapter_max_mib)."
        )
    return size


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidAdapterError(f"{path.name} is not valid JSON: {exc}.") from None
    if not isinstance(value, dict):
        raise InvalidAdapterError(f"{path.name} must hold a JSON object.")
    return value


def _check_config(config: dict[str, Any], max_rank: int) -> tuple[int, float]:
    def refuse(what: str) -> InvalidAdapterError:
        return InvalidAdapterError(f"{CONFIG_NAME}: {what}")

    if config.get("peft_type") != "LORA":
        raise refuse(f"peft_type is {config.get('peft_type')!r}; only 'LORA' can be served.")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise refuse(f"r is {rank!r}; it must be a positive integer.")
    if rank > max_rank:
        raise refuse(
            f"r is {rank}, above this server's max_lora_rank ({max_rank}); restart the server "
            f"with a max_lora_rank of at least {rank}, or train with a smaller rank."
        )
    if config.get("use_dora"):
        raise refuse("use_dora is true; vLLM cannot serve DoRA adapters.")
    if config.get("modules_to_save"):
        raise refuse(f"modules_to_save is {config['modules_to_save']!r}; vLLM cannot serve it.")
    if config.get("bias", "none") != "none":
        raise refuse(f"bias is {config['bias']!r}; vLLM serves only bias 'none'.")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise refuse(f"{key} is set; vLLM serves one rank and alpha for every module.")
    alpha = config.get("lora_alpha", rank)
    if not isinstance(alpha, int | float) or alpha <= 0:
        raise refuse(f"lora_alpha is {alpha!r}; it must be a positive number.")
    return rank, float(alpha)


def _check_tensors(
    path: Path, rank: int, config: dict[str, Any], linear_shapes: dict[str, tuple[int, int]]
) -> set[str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()  # safe_open is not iterable
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in names}
    except (SafetensorError, OSError) as exc:
        raise InvalidAdapterError(
            f"{WEIGHTS_NAME} is not a valid safetensors file: {exc}."
        ) from None
    if not shapes:
        raise InvalidAdapterError(f"{WEIGHTS_NAME} holds no tensors.")
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        module, _, kind = key.removeprefix(_PEFT_PREFIX).rpartition(".lora_")
        if not module or kind not in ("A.weight", "B.weight"):
            raise InvalidAdapterError(
                f"{WEIGHTS_NAME} holds '{key}', which is not a LoRA A/B tensor; only those "
                "can be served."
            )
        pairs.setdefault(module, {})[kind[0]] = shape
    for module, pair in pairs.items():
        _check_pair(module, pair, rank, linear_shapes)
    _check_targets_covered(config, pairs)
    return {module.rpartition(".")[2] for module in pairs}


def _check_pair(
    module: str,
    pair: dict[str, tuple[int, ...]],
    rank: int,
    linear_shapes: dict[str, tuple[int, int]],
) -> None:
    if module not in linear_shapes:
        raise InvalidAdapterError(
            f"The adapter targets '{module}', which is not a linear layer of the served model."
        )
    if set(pair) != {"A", "B"}:
        raise InvalidAdapterError(f"'{module}' has lora_{''.join(pair)} but not both A and B.")
    out_features, in_features = linear_shapes[module]
    expected = {"A": (rank, in_features), "B": (out_features, rank)}
    for kind in ("A", "B"):
        if pair[kind] != expected[kind]:
            raise InvalidAdapterError(
                f"'{module}.lora_{kind}' has shape {list(pair[kind])}; the served model and "
                f"r={rank} need {list(expected[kind])}."
            )


def _check_targets_covered(config: dict[str, Any], pairs: dict[str, Any]) -> None:
    # vLLM serves the base model, silently, for target modules that have no tensors.
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        return  # a regular expression: the tensors themselves were checked above
    present = {module.rpartition(".")[2] for module in pairs}
    missing = sorted(set(targets) - present)
    if missing:
        raise InvalidAdapterError(
            f"target_modules names {missing}, but the adapter has no tensors for them."
        )


def _check_manifest(manifest: dict[str, Any], served: str) -> None:
    if manifest.get("kind", "lora") != "lora":
        raise InvalidAdapterError(
            f"{MANIFEST_NAME} says kind '{manifest.get('kind')}'; only LoRA adapters can be "
            "pushed (serve a full model with --model)."
        )
    trained_on = (manifest.get("base_model") or {}).get("fingerprint")
    if trained_on is not None and trained_on != served:
        raise AdapterConflictError(
            f"The adapter was trained on another base model: its fingerprint is {trained_on}, "
            f"the served model's is {served}."
        )
