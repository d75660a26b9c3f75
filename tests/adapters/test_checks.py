"""The checks an adapter folder must pass before the server registers it (no engine)."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from scripts.bench_adapters import random_adapter
from server.adapters.checks import BaseModelInfo, check_adapter, inspect_base
from server.errors import (
    AdapterConflictError,
    APIError,
    InvalidAdapterError,
    RequestTooLargeError,
)
from tests.adapters.conftest import write_manifest

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def base(tiny_base: Path) -> BaseModelInfo:
    return inspect_base(tiny_base, max_lora_rank=8, max_bytes=10 * 2**20)


@pytest.fixture(scope="module")
def good(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_adapter(tiny_base, tmp_path_factory.mktemp("good") / "adapter")


def test_inspect_base_reads_the_served_models_linear_layers(base: BaseModelInfo) -> None:
    assert base.linear_shapes["model.layers.0.self_attn.q_proj"] == (64, 64)
    assert base.linear_shapes["model.layers.1.mlp.down_proj"] == (64, 128)
    assert len(base.fingerprint) == 64


def test_a_good_adapter_passes_and_is_described(good: Path, base: BaseModelInfo) -> None:
    info = check_adapter(good, base)
    assert (info.rank, info.alpha, info.target_modules) == (4, 8.0, ("q_proj", "v_proj"))
    assert info.eval_loss == 1.25
    assert info.size_bytes == sum(p.stat().st_size for p in good.iterdir())


def test_an_adapter_without_manifest_passes(tiny_base: Path, tmp_path: Path, base) -> None:
    folder = random_adapter(tiny_base, tmp_path / "a", manifest=False)
    assert check_adapter(folder, base).manifest is None


def _copy(good: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good, tmp_path / "copy"))


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _edit_tensors(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_file(folder / WEIGHTS)
    edit(tensors)
    save_file(tensors, folder / WEIGHTS)


def _first_a(tensors: dict[str, torch.Tensor]) -> str:
    return next(k for k in sorted(tensors) if "lora_A" in k)


BAD: list[tuple[str, Callable[[Path], None], type[APIError], str]] = [
    (
        "missing config",
        lambda f: (f / "adapter_config.json").unlink(),
        InvalidAdapterError,
        "no adapter_config.json",
    ),
    ("missing weights", lambda f: (f / WEIGHTS).unlink(), InvalidAdapterError, f"no {WEIGHTS}"),
    (
        "config not JSON",
        lambda f: (f / "adapter_config.json").write_text("{r: 4"),
        InvalidAdapterError,
        "not valid JSON",
    ),
    (
        "corrupt safetensors",
        lambda f: (f / WEIGHTS).write_bytes(b"\x10\x00" + b"x" * 40),
        InvalidAdapterError,
        "not a valid safetensors file",
    ),
    (
        "truncated safetensors",
        lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:-9]),
        InvalidAdapterError,
        "not a valid safetensors file",
    ),
    (
        "rank too high",
        lambda f: _edit_config(f, r=16),
        InvalidAdapterError,
        "above this server's max_lora_rank (8)",
    ),
    ("DoRA", lambda f: _edit_config(f, use_dora=True), InvalidAdapterError, "use_dora"),
    (
        "modules_to_save",
        lambda f: _edit_config(f, modules_to_save=["lm_head"]),
        InvalidAdapterError,
        "modules_to_save",
    ),
    ("bias", lambda f: _edit_config(f, bias="lora_only"), InvalidAdapterError, "bias"),
    ("not LoRA", lambda f: _edit_config(f, peft_type="IA3"), InvalidAdapterError, "peft_type"),
    (
        "target module missing from the base",
        lambda f: _edit_tensors(
            f,
            lambda t: t.update(
                {
                    "base_model.model.model.layers.0.mlp.nope.lora_A.weight": torch.zeros(4, 64),
                    "base_model.model.model.layers.0.mlp.nope.lora_B.weight": torch.zeros(64, 4),
                }
            ),
        ),
        InvalidAdapterError,
        "'model.layers.0.mlp.nope', which is not a linear layer",
    ),
    (
        "target module without tensors",
        lambda f: _edit_config(f, target_modules=["q_proj", "v_proj", "k_proj"]),
        InvalidAdapterError,
        "no tensors for them",
    ),
    (
        "a tensor that is not LoRA",
        lambda f: _edit_tensors(
            f, lambda t: t.update({"base_model.model.lm_head.weight": torch.zeros(2, 2)})
        ),
        InvalidAdapterError,
        "not a LoRA A/B tensor",
    ),
    (
        "DoRA magnitude tensor",
        lambda f: _edit_tensors(
            f,
            lambda t: t.update(
                {
                    "base_model.model.model.layers.0.self_attn.q_proj"
                    ".lora_magnitude_vector": torch.ones(64)
                }
            ),
        ),
        InvalidAdapterError,
        "not a LoRA A/B tensor",
    ),
    (
        "wrong shape",
        lambda f: _edit_tensors(f, lambda t: t.update({_first_a(t): torch.zeros(4, 32)})),
        InvalidAdapterError,
        "need [4, 64]",
    ),
    (
        "half a pair",
        lambda f: _edit_tensors(f, lambda t: t.pop(_first_a(t))),
        InvalidAdapterError,
        "not both A and B",
    ),
    (
        "another base model",
        lambda f: write_manifest(f, "0" * 64),
        AdapterConflictError,
        "its fingerprint is 0000",
    ),
    (
        "a full model's manifest",
        lambda f: write_manifest(f, "x", kind="full"),
        InvalidAdapterError,
        "kind 'full'",
    ),
]


@pytest.mark.parametrize(("case", "spoil", "error", "says"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_adapter_is_refused_with_its_reason(
    case, spoil, error, says, good: Path, base: BaseModelInfo, tmp_path: Path
) -> None:
    folder = _copy(good, tmp_path)
    spoil(folder)
    with pytest.raises(error) as refused:
        check_adapter(folder, base)
    assert says in refused.value.message, refused.value.message


def test_an_adapter_over_the_size_limit_is_refused(good: Path, base: BaseModelInfo) -> None:
    small = BaseModelInfo(base.fingerprint, base.linear_shapes, 8, max_bytes=1000)
    with pytest.raises(RequestTooLargeError, match="at most 1,000"):
        check_adapter(good, small)
