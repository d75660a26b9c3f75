"""The CPU token-mask kernel gives exactly what xgrammar's own CPU kernel gives."""

from importlib import metadata

import pytest
import torch
import xgrammar

from server.engine import cpu_bitmask


def _masks(rows: int, vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and a mask in the shapes structured outputs give: mostly one kind of bit
    per row (a few tokens allowed, or almost all), with every bit pattern in some word."""
    gen = torch.Generator().manual_seed(seed)
    words = (vocab + 31) // 32
    bitmask = torch.randint(-(2**31), 2**31, (rows, words), dtype=torch.int32, generator=gen)
    bitmask[0] = 0
    bitmask[1, 2:] = -1
    bitmask[2, : words // 2] = 0
    logits = torch.randn(rows, vocab + 50, generator=gen)[:, :vocab]  # a view, as vLLM's are
    return logits, bitmask


@pytest.mark.parametrize(
    ("rows", "vocab", "vocab_size", "indices"),
    [
        (16, 910, None, None),  # the demo model, every row constrained
        (5, 1000, None, [4, 0, 2]),  # some rows constrained, in any order
        (4, 64, 40, None),  # fewer tokens than the mask covers
        (3, 100, None, torch.tensor([1])),  # indices as a tensor
    ],
)
def test_the_kernel_masks_what_xgrammars_masks(
    rows: int, vocab: int, vocab_size: int | None, indices: list[int] | torch.Tensor | None
) -> None:
    logits, bitmask = _masks(rows, vocab, seed=rows * vocab)
    expected = logits.clone()
    cpu_bitmask.apply_token_bitmask(logits, bitmask, vocab_size=vocab_size, indices=indices)
    _xgrammar_kernel(expected, bitmask, vocab_size, indices)
    assert torch.equal(logits, expected)
    assert torch.isinf(logits).any()
    assert not torch.isinf(logits).all()


def _xgrammar_kernel(
    logits: torch.Tensor,
    bitmask: torch.Tensor,
    vocab_size: int | None,
    indices: list[int] | torch.Tensor | None,
) -> None:
    from xgrammar.kernels.apply_token_bitmask_inplace_cpu import apply_token_bitmask_inplace_cpu

    apply_token_bitmask_inplace_cpu(logits, bitmask, vocab_size, indices)


def test_installed_it_serves_cpu_calls_and_leaves_the_rest_to_xgrammar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(
        xgrammar, "apply_token_bitmask_inplace", lambda *a, **k: calls.append(k["backend"])
    )
    monkeypatch.setattr(cpu_bitmask, "apply_token_bitmask", lambda *a, **k: calls.append("ours"))
    cpu_bitmask.install()
    cpu_bitmask.install()  # once is enough: a second call keeps the first
    logits, bitmask = _masks(4, 64, seed=1)
    xgrammar.apply_token_bitmask_inplace(logits, bitmask)
    xgrammar.apply_token_bitmask_inplace(logits, bitmask, backend="torch_native")
    xgrammar.apply_token_bitmask_inplace(logits[0], bitmask[0])  # 1-D: xgrammar's
    assert calls == ["ours", "torch_native", "auto"]


def test_vllm_loads_it_in_its_processes() -> None:
    plugins = metadata.entry_points(group="vllm.general_plugins")
    assert plugins["kangaroo_cpu_bitmask"].load() is cpu_bitmask.install
