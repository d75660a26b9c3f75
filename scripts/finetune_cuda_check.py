"""Our trainer end to end on CUDA, eager and compiled, on a model with Llama-3.2-1B's blocks.

    python -m scripts.finetune_cuda_check --out DIR [--steps 40] [--warmup 10]

Builds a Llama with Llama-3.2-1B's blocks (hidden 2048, intermediate 8192, 16 layers, 32 heads;
the demo tokenizer, so a small vocabulary) and random weights, writes the demo chat dataset,
and trains the same LoRA (r=16 on all seven projections; bf16 base, packing on unless
--no-packing, 8,192 tokens a step) twice through the trainer `python -m finetune train` runs:
without, then with `--compile`. Each run must export a complete adapter folder. Printed per
run: tokens/s over the steps after `--warmup` (compilation happens in those), peak GPU memory
and final loss; then how far the two adapters' tensors are apart, and one JSON summary line.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import finetune.trainer as trainer
from finetune.demo import skills
from finetune.demo.build import DEMO_SHAPE, ModelShape, build_base_model
from finetune.settings import TrainSettings
from server.contract import MANIFEST_NAME

LLAMA_1B_BLOCKS = ModelShape(hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32)


def timed_train(settings: TrainSettings, warmup: int) -> dict[str, Any]:
    """Run `trainer.train`, timing each optimiser step; the run's figures."""
    starts: list[float] = []
    ends: list[float] = []
    tokens: list[int] = []
    step = trainer._train_step

    # train() has no per-step hook; the step returns loss.item(), which waits for the GPU.
    def timed_step(model: Any, batch: Any, *rest: Any) -> float:
        starts.append(time.perf_counter())
        loss = step(model, batch, *rest)
        ends.append(time.perf_counter())
        tokens.append(batch.num_tokens)
        return loss

    trainer._train_step = timed_step  # type: ignore[assignment]
    cuda = settings.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        result = trainer.train(settings)
    finally:
        trainer._train_step = step
    seconds = ends[-1] - ends[warmup - 1]
    manifest = json.loads((settings.out / MANIFEST_NAME).read_text())
    return {
        "compile": settings.compile,
        "packing": settings.packing,
        "out": str(settings.out),
        "steps": result.steps,
        "tok_s": sum(tokens[warmup:]) / seconds,
        "first_steps_s": ends[warmup - 1] - starts[0],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
        "train_loss": result.train_loss,
        "eval_loss": result.eval_loss,
        "compiled": manifest["training"]["compiled"],
    }


def main() -> None:
    """Build, train twice, compare, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, required=True, help="work folder: model, data, adapters"
    )
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="steps not timed")
    parser.add_argument("--tiny", action="store_true", help="the demo shape on the CPU: a dry run")
    parser.add_argument("--no-packing", dest="packing", action="store_false")
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device (or --tiny)")
    shape = DEMO_SHAPE if args.tiny else LLAMA_1B_BLOCKS
    base = args.out / "base"
    if not (base / "config.json").is_file():  # reused by a second invocation on the same folder
        build_base_model(base, 0, shape, skills.corpus())
    train_path, eval_path = skills.write_dataset(args.out, 0, 4000)
    runs = []
    for compile in (False, True):
        name = f"{'compiled' if compile else 'eager'}-{'packed' if args.packing else 'padded'}"
        settings = TrainSettings(
            base=str(base),
            data=train_path,
            eval=eval_path,
            out=args.out / f"adapter-{name}",
            compile=compile,
            packing=args.packing,
            epochs=10,  # enough passes for --steps; max_steps ends the run
            max_steps=args.steps,
            eval_every=args.steps,
            eval_accuracy=False,  # no vLLM on the GPU machine: the eval loss is what is timed
            batch_tokens=8192,
            max_seq_len=1024,
            device="cpu" if args.tiny else "cuda",
            progress=False,
        )
        runs.append(timed_train(settings, args.warmup))
        run = runs[-1]
        print(
            f"{name:16s}  {run['tok_s']:>9,.0f} tok/s  peak {run['peak_gib']:5.1f} GiB"
            f"  first {args.warmup} steps {run['first_steps_s']:5.1f} s"
            f"  train loss {run['train_loss']:.4f}  eval loss {run['eval_loss']:.4f}",
            flush=True,
        )
    if len(runs) != 2:
        return
    drift = adapter_drift(*(Path(run["out"]) for run in runs))
    summary = {
        "device": "cpu" if args.tiny else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "shape": shape.__dict__,
        "runs": runs,
        "speedup": round(runs[1]["tok_s"] / runs[0]["tok_s"], 3),
        "memory_ratio": round(runs[1]["peak_gib"] / max(runs[0]["peak_gib"], 1e-9), 3),
        "max_relative_tensor_drift": drift,
    }
    print(f"compiled / eager: x{summary['speedup']} tok/s, x{summary['memory_ratio']} memory")
    print(f"largest relative difference between the two adapters' tensors: {drift:.2e}")
    print(json.dumps(summary))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def adapter_drift(a: Path, b: Path) -> float:
    """Largest ||a - b|| / ||a|| over the two adapters' tensors."""
    from safetensors.torch import load_file

    left = load_file(a / "adapter_model.safetensors")
    right = load_file(b / "adapter_model.safetensors")
    if left.keys() != right.keys():
        raise SystemExit(f"adapters differ in tensors: {sorted(left.keys() ^ right.keys())}")
    return max(
        float((left[k].float() - right[k].float()).norm() / left[k].float().norm().clamp(min=1e-12))
        for k in left
    )


if __name__ == "__main__":
    main()
