"""LoRA step speed on CUDA: PEFT + a plain loop against our trainer's loss path.

    python scripts/bench_finetune_gpu.py            # Llama-3.2-1B shape, 8 x 1,024 tokens, bf16
    python scripts/bench_finetune_gpu.py --tiny     # a toy shape, a few steps: runs on a CPU

Self-contained on purpose: it needs only torch, transformers and peft (no download, nothing of
this repository), so it runs on a bare GPU machine. The model is a Llama-3.2-1B-shaped Llama
(hidden 2048, intermediate 8192, 16 layers, 32 heads, 8 KV heads, vocabulary 128,256, tied
embeddings, rope theta 500,000) with random weights in bf16, SDPA attention. Every variant
trains the same LoRA (r=16, alpha=32, all seven projections of every block; PEFT keeps the
adapters in fp32) under bf16 autocast with AdamW and gradient clipping, on the same batches:
8 rows of 1,024 random tokens whose first `--prompt-fraction` takes no loss (an SFT prompt).

Variants, each from the same initial adapter weights:
- baseline:      `model(input_ids, attention_mask, labels=...)`, transformers' own loss, which
                 projects every position onto the vocabulary.
- ours:          our trainer's loss path (`finetune.trainer.batch_loss`, repeated here): the
                 decoder's hidden states, the output head on target positions only, then
                 cross-entropy.
- ours+compile:  the same with every decoder block compiled by torch.compile, and the output
                 head + cross-entropy compiled into one graph (CUDA only unless asked for).

Measured per variant: tokens/s over the steps after `--warmup` (CUDA-synchronised wall time;
compilation happens in the warm-up) and the peak of `torch.cuda.max_memory_allocated` over its
steps. The last line printed is one JSON summary with the best variant's ratio to the baseline
(target >= 1.5x at no more memory than the baseline).
"""

import argparse
import gc
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # targets that take no loss (torch's ignore_index)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# An H100's figures for the baseline with the full shape (given with the task).
REFERENCE_BASELINE = {"device": "NVIDIA H100", "tok_s": 32569, "peak_gib": 33.6}
TARGET_SPEEDUP = 1.5


@dataclass(frozen=True)
class Shape:
    """A Llama's size."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int


LLAMA_3_2_1B = Shape(2048, 8192, 16, 32, 8, 128256)
TINY = Shape(64, 128, 2, 4, 2, 512)


@dataclass(frozen=True)
class Workload:
    """What every variant trains on."""

    rows: int = 8
    seq_len: int = 1024
    steps: int = 20
    warmup: int = 5
    prompt_fraction: float = 0.5
    lr: float = 2e-4
    seed: int = 0


@dataclass
class Batch:
    """One step's tensors, (rows, seq_len) each, in both loss conventions."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor  # transformers' convention: labels[t] is learned from tokens < t
    targets: torch.Tensor  # ours: targets[t] is predicted from tokens <= t

    @property
    def num_tokens(self) -> int:
        """Tokens processed (there is no padding)."""
        return self.input_ids.numel()


def build_model(shape: Shape, device: torch.device, seed: int) -> nn.Module:
    """A random-weight Llama of `shape` with LoRA on all seven projections, bf16 on CUDA."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=131072,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    with torch.device(device):  # initialise where it runs: 1.2 B parameters init fast on a GPU
        model = LlamaForCausalLM(config)
    model.to(_dtype(device))
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules=PROJECTIONS, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lora)


def make_batches(workload: Workload, vocab: int, device: torch.device) -> list[Batch]:
    """Random rows; the first `prompt_fraction` of each row takes no loss."""
    gen = torch.Generator().manual_seed(workload.seed)
    rows, width = workload.rows, workload.seq_len
    learn = torch.arange(width) >= int(width * workload.prompt_fraction)
    batches = []
    for _ in range(workload.steps):
        ids = torch.randint(0, vocab, (rows, width), generator=gen)
        labels = torch.where(learn, ids, IGNORE)
        targets = torch.cat([labels[:, 1:], torch.full((rows, 1), IGNORE)], dim=1)
        positions = torch.arange(width).expand(rows, width).contiguous()
        batches.append(
            Batch(ids.to(device), positions.to(device), labels.to(device), targets.to(device))
        )
    return batches


def baseline_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean loss the standard way: logits for every position, transformers' loss function."""
    mask = torch.ones_like(batch.input_ids)
    out = model(input_ids=batch.input_ids, attention_mask=mask, labels=batch.labels)
    loss: torch.Tensor = out.loss
    return loss


def target_only_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean loss our trainer's way (finetune.trainer.batch_loss): the output head runs on the
    hidden states of target positions only, so prompt positions never get vocabulary logits."""
    causal = model.get_base_model()
    hidden = causal.get_decoder()(
        input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
    ).last_hidden_state
    keep = batch.targets != IGNORE
    logits = causal.get_output_embeddings()(hidden[keep])
    loss = F.cross_entropy(logits.float(), batch.targets[keep], reduction="sum")
    return loss / keep.sum().clamp(min=1)


def compile_blocks(model: nn.Module) -> None:
    """torch.compile every decoder block in place. The blocks share compiled code: one graph for
    the first block (its input needs no gradient: the embedding is frozen), one for the rest."""
    # Dynamo guards on each block's own attributes: 16 blocks can exceed its default limit of
    # 8 recompilations, after which the remaining blocks would silently run eagerly.
    torch._dynamo.config.cache_size_limit = 64
    for layer in model.get_base_model().get_decoder().layers:
        layer.compile()


@torch.compile(dynamic=True)
def _head_loss_sum(hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Output head and cross-entropy as one compiled graph: the float upcast, log-sum-exp and
    gather fuse into a pass over the logits instead of several."""
    logits = F.linear(hidden, head).float()
    return F.cross_entropy(logits, targets, reduction="sum")


def compiled_target_only_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """`target_only_loss` with the head and cross-entropy compiled (blocks compiled separately)."""
    causal = model.get_base_model()
    hidden = causal.get_decoder()(
        input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
    ).last_hidden_state
    keep = batch.targets != IGNORE
    head = causal.get_output_embeddings().weight
    loss = _head_loss_sum(hidden[keep], head.to(hidden.dtype), batch.targets[keep])
    return loss / keep.sum().clamp(min=1)


@dataclass
class Measurement:
    """One variant's figures."""

    name: str
    tok_s: float
    s_per_step: float
    peak_gib: float | None
    first_loss: float
    last_loss: float


def measure(
    name: str,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    batches: list[Batch],
    warmup: int,
    lr: float,
) -> Measurement:
    """Train one step per batch; time the steps after `warmup`."""
    device = batches[0].input_ids.device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    _reset_peak(device)
    losses, started = [], 0.0
    for step, batch in enumerate(batches):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # a plain loop logs its loss: both variants pay this sync
    _sync(device)
    seconds = time.perf_counter() - started
    timed = len(batches) - warmup
    return Measurement(
        name,
        tok_s=sum(b.num_tokens for b in batches[warmup:]) / seconds,
        s_per_step=seconds / timed,
        peak_gib=_peak_gib(device),
        first_loss=losses[0],
        last_loss=losses[-1],
    )


def run(shape: Shape, workload: Workload, device: torch.device, variants: list[str]) -> dict:
    """Measure each variant from the same initial adapter weights; the summary as a dict."""
    model = build_model(shape, device, workload.seed)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainable = sum(p.numel() for p in initial.values())
    batches = make_batches(workload, shape.vocab, device)
    results = []
    for name in variants:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(initial[n])
        if name == "ours+compile":
            compile_blocks(model)  # last in VARIANTS: compiling changes the blocks for good
        loss_fn = LOSSES[name]
        try:
            results.append(measure(name, model, loss_fn, batches, workload.warmup, workload.lr))
        except Exception as error:  # one variant failing must not lose the others' figures
            print(f"{name}: failed: {type(error).__name__}: {error}", flush=True)
            continue
        print(_line(results[-1], results[0]), flush=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return summary(results, shape, workload, device, trainable)


def summary(
    results: list[Measurement], shape: Shape, workload: Workload, device: torch.device, lora: int
) -> dict[str, Any]:
    """Every variant's figures, the best one's speed-up over the baseline and the verdict."""
    base = next(r for r in results if r.name == "baseline")
    others = [r for r in results if r is not base]
    best = max(others, key=lambda r: r.tok_s) if others else base
    speedup = best.tok_s / base.tok_s
    memory_ratio = None  # unknown off CUDA
    if best.peak_gib is not None and base.peak_gib:
        memory_ratio = best.peak_gib / base.peak_gib
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "shape": asdict(shape),
        "workload": asdict(workload),
        "lora_params": lora,
        "versions": {"torch": torch.__version__, **_versions()},
        "variants": {r.name: asdict(r) for r in results},
        "best": best.name,
        "speedup": round(speedup, 3),
        "memory_ratio": None if memory_ratio is None else round(memory_ratio, 3),
        "target": f">= {TARGET_SPEEDUP}x tok/s at <= baseline memory",
        "met": speedup >= TARGET_SPEEDUP and memory_ratio is not None and memory_ratio <= 1.0,
        "reference_baseline": REFERENCE_BASELINE,
    }


def _line(result: Measurement, base: Measurement) -> str:
    memory = "n/a" if result.peak_gib is None else f"{result.peak_gib:.1f} GiB"
    return (
        f"{result.name:14s} {result.tok_s:>10,.0f} tok/s  {result.s_per_step * 1000:7.1f} ms/step"
        f"  peak {memory:>9s}  x{result.tok_s / base.tok_s:.2f}"
        f"  loss {result.first_loss:.3f} -> {result.last_loss:.3f}"
    )


def _dtype(device: torch.device) -> torch.dtype:
    # bf16 weights on CUDA as our trainer loads them for LoRA; fp32 on CPU (bf16 is slow there).
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"transformers": transformers.__version__, "peft": peft.__version__}


LOSSES: dict[str, Callable[[nn.Module, Batch], torch.Tensor]] = {
    "baseline": baseline_loss,
    "ours": target_only_loss,
    "ours+compile": compiled_target_only_loss,
}
VARIANTS = list(LOSSES)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, print the per-variant lines and the JSON summary; return the summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="toy shape and batch, a few steps")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--steps", type=int, help="steps per variant, warm-up included")
    parser.add_argument("--warmup", type=int, help="steps not timed (compilation happens here)")
    parser.add_argument("--prompt-fraction", type=float, default=Workload.prompt_fraction)
    parser.add_argument(
        "--variants", default=None, help=f"comma list of {', '.join(VARIANTS)} (baseline always)"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON summary to this file")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    shape = TINY if args.tiny else LLAMA_3_2_1B
    defaults = Workload(rows=2, seq_len=64, steps=4, warmup=1) if args.tiny else Workload()
    workload = Workload(
        rows=defaults.rows,
        seq_len=defaults.seq_len,
        steps=args.steps or defaults.steps,
        warmup=args.warmup if args.warmup is not None else defaults.warmup,
        prompt_fraction=args.prompt_fraction,
    )
    if workload.steps <= workload.warmup:
        parser.error(f"--steps ({workload.steps}) must exceed --warmup ({workload.warmup})")
    result = run(shape, workload, device, _variants(args.variants, device))
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _variants(chosen: str | None, device: torch.device) -> list[str]:
    # torch.compile on a CPU needs a C++ toolchain and minutes: CUDA only unless asked for.
    names = (
        chosen.split(",")
        if chosen
        else [v for v in VARIANTS if device.type == "cuda" or "compile" not in v]
    )
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; pick from {VARIANTS}")
    return [v for v in VARIANTS if v in names or v == "baseline"]


if __name__ == "__main__":
    main()
