"""Training in one straight line: set up → plan → preflight → train (eval, checkpoints) → export
→ accuracy report.

LoRA by default (PEFT), every parameter with `full`. Matmuls run in bf16 on CUDA and on CPUs
with bf16 dot-product instructions (about 2x faster there), else in fp32; trained weights and
the optimiser stay fp32 (in bf16 the frozen base of a LoRA is stored in bf16). On CPU the same
seed and data give the same tensors. The loss is the mean cross-entropy over target tokens
(assistant turns), computed from the hidden states of those tokens only: the output head never
runs over prompt tokens, which saves most of its memory on large vocabularies.
"""

import dataclasses
import functools
import gc
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from finetune import accuracy, adapter, auto, report
from finetune.batching import Batch, epoch_order, make_batches, packed_length
from finetune.data import IGNORE, Dataset, load_dataset
from finetune.preflight import check_lora
from finetune.settings import TrainSettings
from server.contract import KangarooError, base_fingerprint, server_rank_for

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


class InvalidDataError(KangarooError):
    """The data has invalid rows (and --skip-invalid was not given) or no usable row."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    out: Path
    steps: int
    train_loss: float
    eval_loss: float | None
    tokens_per_s: float
    plan: auto.Plan
    warning: str | None = None  # why the run looks as if it learned nothing, if it does
    eval_accuracy: accuracy.Accuracy | None = None  # the report in vLLM, with --eval
    accuracy_error: str | None = None  # why there is no report although --eval was given


def train(settings: TrainSettings) -> TrainResult:
    """Run the whole training described by `settings` and write the output folder.

    `settings.base` is a model folder (the CLI turns `demo` into the demo model's folder).
    """
    torch.manual_seed(settings.seed)
    device = _device(settings.device)
    bf16 = uses_bf16(settings.precision, device)
    base_dir = Path(settings.base).expanduser()
    tokenizer, model = load_base(base_dir, bf16_base=bf16 and not settings.full)
    context_len = int(model.config.max_position_embeddings)
    seq_len = min(settings.max_seq_len, context_len)
    train_set = _load(settings.data, tokenizer, seq_len, context_len, settings.skip_invalid)
    eval_set = None
    if settings.eval is not None:
        eval_set = _load(settings.eval, tokenizer, seq_len, context_len, skip_invalid=False)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    plan = plan_run(settings, train_set, seq_len, pad_id, model.config.hidden_size)
    print("Hyperparameters (auto: chosen from the data and the model):", *plan.lines(), sep="\n")
    if not settings.full:
        model = _add_lora(model, tokenizer, settings)
    model.to(device)
    if settings.compile:
        compile_blocks(model, fixed_shapes=settings.packing)
    eval_batches = []
    if eval_set is not None:
        eval_batches = _batches(eval_set, settings, plan.batch_tokens, seq_len, pad_id, None)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=plan.lr, weight_decay=settings.weight_decay)
    total_steps = plan.total_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(plan.warmup_steps, total_steps)
    )
    work = work_dir(settings.out)
    start_step = _start(work, settings.resume, model, optimizer, scheduler)
    metrics = report.MetricsLog(work / METRICS, keep_until_step=start_step)
    if start_step == 0:
        # The schedule, then the loss before any step: what "did it learn" is measured against.
        metrics.write(step=0, **plan.schedule())
        if eval_batches:
            eval_loss = evaluate(model, eval_batches, device, settings.compile, bf16)
            metrics.write(step=0, eval_loss=eval_loss)

    losses: list[float] = []
    eval_loss = None
    started, tokens = time.perf_counter(), 0
    batches = _step_batches(train_set, settings, plan, seq_len, pad_id, start_step)
    bar = tqdm(total=total_steps, initial=start_step, disable=not settings.progress, unit="step")
    for step in range(start_step + 1, total_steps + 1):
        batch = next(batches).to(device)
        loss = _train_step(
            model, batch, optimizer, trainable, settings.grad_clip, settings.compile, bf16
        )
        scheduler.step()
        tokens += batch.num_tokens
        losses.append(loss)
        rate = tokens / (time.perf_counter() - started)
        metrics.write(step=step, train_loss=loss, lr=scheduler.get_last_lr()[0], tokens_per_s=rate)
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")
        bar.update()
        if eval_batches and (step % settings.eval_every == 0 or step == total_steps):
            eval_loss = evaluate(model, eval_batches, device, settings.compile, bf16)
            metrics.write(step=step, eval_loss=eval_loss)
            bar.write(f"step {step}: eval loss {eval_loss:.4f}")
        if step % settings.checkpoint_every == 0 and step < total_steps:
            _save_checkpoint(work, step, model, optimizer, scheduler)
    bar.close()

    result = TrainResult(
        settings.out,
        total_steps,
        _final(losses) if losses else metrics.last("train_loss"),
        eval_loss,
        tokens / max(time.perf_counter() - started, 1e-9),
        plan,
        report.no_progress_warning(report.read_metrics(work / METRICS), plan),
    )
    _export(settings, model, tokenizer, base_dir, train_set, eval_set, result, work)
    shutil.rmtree(work)
    if eval_set is None or not settings.eval_accuracy:
        return result
    # vLLM gets the memory the training held (on a GPU, most of it).
    del model, optimizer, trainable, scheduler
    _free_memory(device)
    return _with_accuracy(result, settings, base_dir, eval_set, context_len)


def _with_accuracy(
    result: TrainResult,
    settings: TrainSettings,
    base_dir: Path,
    eval_set: Dataset,
    context_len: int,
) -> TrainResult:
    """The result with the accuracy report in vLLM, also written into the manifest."""
    try:
        measured = accuracy.measure(
            base_dir,
            settings.out,
            accuracy.eval_cases(eval_set.path),
            full=settings.full,
            rank=settings.rank,
            context=min(context_len, eval_set.longest + accuracy.EXTRA_TOKENS + 64),
        )
    except accuracy.AccuracyError as exc:
        return dataclasses.replace(result, accuracy_error=str(exc))
    # One warning is enough: the loss's, if the run already has one, names the same causes.
    warning = result.warning or report.no_gain_warning(measured.tuned, measured.base, result.plan)
    warnings = [warning] if warning else []
    adapter.update_manifest(settings.out, eval_accuracy=measured.as_dict(), warnings=warnings)
    return dataclasses.replace(result, eval_accuracy=measured, warning=warning)


def plan_run(
    settings: TrainSettings, dataset: Dataset, seq_len: int, pad_id: int, hidden_size: int
) -> auto.Plan:
    """The run's hyperparameters: the settings' values, and for each `auto` the rule's pick."""
    examples = dataset.examples
    lengths = [len(e.input_ids) for e in examples]
    shape = auto.DataShape(len(lengths), sum(lengths), max(lengths))
    reasons: dict[str, str] = {}
    batch_tokens = settings.batch_tokens
    if batch_tokens == "auto":
        pack_len = packed_length(examples, seq_len) if settings.packing else None
        batch_tokens, reasons["batch_tokens"] = auto.batch_tokens(shape, pack_len)
    per_epoch = len(_batches(dataset, settings, batch_tokens, seq_len, pad_id, epoch=0))
    epochs = settings.epochs
    if epochs == "auto":
        epochs, reasons["epochs"] = auto.epochs(shape.rows, per_epoch)
    lr = settings.lr
    if lr == "auto":
        lr, reasons["lr"] = auto.learning_rate(int(hidden_size), settings.full)
    chosen = tuple(reasons)
    total = max(1, math.ceil(epochs * per_epoch))
    reasons["steps"] = f"{epochs:g} x {per_epoch} steps per epoch"
    if settings.max_steps is not None and settings.max_steps < total:
        total, reasons["steps"] = settings.max_steps, "max_steps"
    warmup, reasons["warmup_steps"] = auto.warmup_steps(
        total, settings.warmup_steps, settings.warmup_fraction
    )
    return auto.Plan(epochs, lr, batch_tokens, total, warmup, reasons, chosen)


def load_base(base_dir: Path, bf16_base: bool) -> tuple[Any, nn.Module]:
    """Tokenizer and model; `bf16_base` (LoRA in bf16) loads the frozen weights in bf16.

    Frozen weights get no gradient and no optimiser state, so bf16 loses nothing there and
    halves their memory; autocast would otherwise cast each of them to bf16 at every step.
    The LoRA weights stay fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if bf16_base else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    return tokenizer, model


def work_dir(out: Path) -> Path:
    """Where a run keeps its checkpoint and metrics until it exports: beside `out`."""
    return out.with_name(f".{out.name}.work")


def batch_loss(model: nn.Module, batch: Batch, compiled: bool = False) -> tuple[torch.Tensor, int]:
    """Sum of cross-entropy over the batch's target tokens, and how many there are.

    `compiled` runs the output head and the cross-entropy as one compiled graph."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal.get_decoder()(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        attention_mask=batch.attention_mask,
        # With a cache, transformers skips the packed-sequence mask and rows see each other.
        use_cache=False,
    ).last_hidden_state  # (B, T, H)
    keep = batch.targets != IGNORE  # (B, T)
    head = causal.get_output_embeddings()
    loss_fn = _compiled_head_loss() if compiled else head_loss
    # The output head runs on target tokens only: prompt tokens never get vocabulary logits.
    loss = loss_fn(hidden[keep], head.weight, head.bias, batch.targets[keep])
    return loss, int(keep.sum())


def head_loss(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    """Summed cross-entropy of the output head's logits for `hidden` (N, H) against `targets`."""
    logits = F.linear(hidden, weight, bias)  # (N, V)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


@functools.cache
def _compiled_head_loss() -> Any:
    # One graph: the fp32 upcast, log-sum-exp and gather fuse into one pass over the logits.
    # Dynamic: the number of target tokens changes from batch to batch.
    return torch.compile(head_loss, dynamic=True)


def compile_blocks(model: nn.Module, fixed_shapes: bool) -> None:
    """torch.compile every decoder block in place (they share compiled code).

    `fixed_shapes`: every batch has one shape (packing), so the graph is specialised to it;
    otherwise the second shape seen makes the batch dimensions dynamic instead of recompiling
    for every padded length."""
    # Dynamo guards on each block's own attributes: more blocks than its default limit of 8
    # recompilations would leave the rest silently running eagerly.
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    for layer in causal.get_decoder().layers:
        layer.compile(dynamic=False if fixed_shapes else None)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: list[Batch],
    device: torch.device,
    compiled: bool = False,
    bf16: bool = False,
) -> float:
    """Mean loss per target token over `batches`."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        with _autocast(device, bf16):
            loss, n = batch_loss(model, batch.to(device), compiled)
        total, count = total + loss.item(), count + n
    model.train()
    return total / max(count, 1)


def _train_step(
    model: nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    trainable: list[nn.Parameter],
    grad_clip: float,
    compiled: bool,
    bf16: bool,
) -> float:
    with _autocast(batch.input_ids.device, bf16):
        loss_sum, count = batch_loss(model, batch, compiled)
    loss = loss_sum / max(count, 1)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


def _autocast(device: torch.device, bf16: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether matmuls run in bf16: asked for, or `auto` where the hardware does it natively.

    On a CPU without bf16 dot-product instructions, bf16 is emulated and slower than fp32; with
    them (AVX512-BF16 on Zen 4 and later, AMX on recent Xeons) a bf16 matmul ran 4.6x faster
    than fp32 and a LoRA training step 2.1x faster on our 2-core test machine.
    """
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _load(
    path: Path, tokenizer: Any, seq_len: int, context_len: int, skip_invalid: bool
) -> Dataset:
    dataset = load_dataset(path, tokenizer, seq_len, context_len)
    if dataset.problems and not skip_invalid:
        shown = "\n  ".join(map(str, dataset.problems[:20]))
        more = len(dataset.problems) - 20
        raise InvalidDataError(
            f"{dataset.summary()}\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nFix these rows, or pass --skip-invalid to train on the others."
        )
    if dataset.problems:
        print(f"Skipping {len(dataset.invalid_rows)} invalid rows of {path}:")
        for problem in dataset.problems:
            print(f"  {problem}")
    if not dataset.examples:
        raise InvalidDataError(f"{path}: no row to train on")
    return dataset


def _add_lora(model: nn.Module, tokenizer: Any, settings: TrainSettings) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        use_rslora=settings.rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    check_lora(config, model, tokenizer)
    return get_peft_model(model, config)


def _batches(
    dataset: Dataset,
    settings: TrainSettings,
    batch_tokens: int,
    seq_len: int,
    pad_id: int,
    epoch: int | None,
) -> list[Batch]:
    order = (
        range(len(dataset.examples))
        if epoch is None
        else epoch_order(len(dataset.examples), settings.seed, epoch)
    )
    examples = [dataset.examples[i] for i in order]
    return make_batches(examples, batch_tokens, seq_len, settings.packing, pad_id, settings.compile)


def _step_batches(
    dataset: Dataset, settings: TrainSettings, plan: auto.Plan, seq_len: int, pad_id: int, skip: int
) -> Iterator[Batch]:
    """The batches of every step in order, epoch after epoch, without the first `skip`."""
    epoch = 0
    while True:
        for batch in _batches(dataset, settings, plan.batch_tokens, seq_len, pad_id, epoch):
            if skip:
                skip -= 1
            else:
                yield batch
        epoch += 1


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _warmup_cosine(warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _final(losses: list[float]) -> float:
    """Mean loss of the last tenth of the steps: one step's loss is too noisy to report."""
    tail = losses[-max(1, len(losses) // 10) :]
    return sum(tail) / len(tail)


def _start(
    work: Path,
    resume: bool,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> int:
    """The step to continue after: 0 for a new run, the checkpoint's step with --resume."""
    checkpoint = work / CHECKPOINT
    if not resume:
        if work.exists():
            raise KangarooError(
                f"An earlier run left {work}: pass --resume to continue it, or delete the folder."
            )
        work.mkdir(parents=True)
        return 0
    if not checkpoint.is_file():
        raise KangarooError(f"--resume: no checkpoint at {checkpoint}")
    state = torch.load(checkpoint, weights_only=False)
    model.load_state_dict(state["trainable"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    print(f"Resuming after step {state['step']} from {checkpoint}")
    return int(state["step"])


def _save_checkpoint(
    work: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> None:
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    state = {
        "step": step,
        "trainable": trainable,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
    }
    tmp = work / f"{CHECKPOINT}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, work / CHECKPOINT)  # a crash mid-save keeps the previous checkpoint


def _export(
    settings: TrainSettings,
    model: nn.Module,
    tokenizer: Any,
    base_dir: Path,
    train_set: Dataset,
    eval_set: Dataset | None,
    result: TrainResult,
    work: Path,
) -> None:
    base_config = json.loads((base_dir / "config.json").read_text())
    with adapter.atomic_folder(settings.out) as tmp:
        model.save_pretrained(tmp)
        (tmp / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
        if settings.full:
            tokenizer.save_pretrained(tmp)
        shutil.copy2(work / METRICS, tmp / METRICS)
        report.plot_losses(tmp / METRICS, tmp / "loss.png")
        adapter.write_manifest(
            tmp, _manifest(settings, base_dir, base_config, tokenizer, train_set, eval_set, result)
        )


def _manifest(
    settings: TrainSettings,
    base_dir: Path,
    base_config: dict[str, Any],
    tokenizer: Any,
    train_set: Dataset,
    eval_set: Dataset | None,
    result: TrainResult,
) -> dict[str, Any]:
    lora = None
    if not settings.full:
        lora = {
            "rank": settings.rank,
            "alpha": settings.alpha,
            "dropout": settings.dropout,
            "target_modules": settings.target_modules,
            "rslora": settings.rslora,
            "max_lora_rank": server_rank_for(settings.rank),
        }
    return {
        "kind": "full" if settings.full else "lora",
        "base_model": {
            "path": str(base_dir.resolve()),
            "fingerprint": base_fingerprint(base_config, tokenizer),
        },
        "lora": lora,
        "data": _data_record(train_set),
        "eval_data": None if eval_set is None else _data_record(eval_set),
        "training": {
            "epochs": result.plan.epochs,
            "steps": result.steps,
            "lr": result.plan.lr,
            "batch_tokens": result.plan.batch_tokens,
            "warmup_steps": result.plan.warmup_steps,
            "auto": {name: result.plan.reasons[name] for name in result.plan.chosen},
            "max_seq_len": settings.max_seq_len,
            "packing": settings.packing,
            "seed": settings.seed,
            "device": _device(settings.device).type,
            "precision": _precision_name(settings),
            "compiled": settings.compile,
            "tokens_per_s": round(result.tokens_per_s, 1),
        },
        "final_train_loss": result.train_loss,
        "final_eval_loss": result.eval_loss,
        "eval_accuracy": None,  # filled in by the accuracy report, after the export
        "warnings": [result.warning] if result.warning else [],
        "versions": adapter.package_versions(),
        "created": adapter.now_iso(),
    }


def _precision_name(settings: TrainSettings) -> str:
    return "bf16" if uses_bf16(settings.precision, _device(settings.device)) else "fp32"


def _data_record(dataset: Dataset) -> dict[str, Any]:
    return {
        "file": dataset.path.name,
        "sha256": dataset.sha256,
        "rows": dataset.num_rows,
        "rows_used": len(dataset.examples),
        "rows_skipped": len(dataset.invalid_rows),
        "tokens": dataset.num_tokens,
        "target_tokens": sum(e.num_target_tokens for e in dataset.examples),
    }
