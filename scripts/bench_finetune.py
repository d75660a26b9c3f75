"""Fine-tuning speed on CPU: our trainer against TRL's SFTTrainer, same model, data and settings.

    python scripts/bench_finetune.py compare --repeats 3       # -> scripts/results/finetune-cpu/

Each system trains a LoRA adapter (r=16, alpha=32, all seven projections of every block) on the
same random-weight Llama (built here from nothing, cached), the same short chat rows of
finetune/demo/skills.py, with the same learning rate, schedule, gradient clipping, precision
(`--precision`: both bf16 or both fp32; `auto` is what our trainer picks for this CPU) and
compilation (`--compile`: ours with `--compile`, TRL with `torch_compile`; off by default)
and number of optimiser steps, in a process of its own (so peaks of memory do not mix). Four
runs per repeat, interleaved over repeats so drift of the machine spreads over all of them:

- ours, padded:  `finetune.trainer.train` with packing off (whole rows padded to the longest).
- TRL, padded:   `SFTTrainer`, no packing, as many rows per step as our padded batches hold.
- ours, packed:  `finetune.trainer.train` with packing (rows laid end to end, rows never meet).
- TRL, packed:   `SFTTrainer` with `packing=True` (best-fit decreasing, padding-free).

Both get the very same token ids and loss positions: the rows are tokenized once by our data
code (chat template; loss on assistant tokens up to and including the end-of-turn token) and TRL
receives them as a pre-tokenized dataset with `labels`.

Measured per run, from the steps after `--warmup` warm-up steps:
- useful tokens/s: tokens of the rows themselves (padding not counted) trained per second of
  training-loop wall time, from the end of the last warm-up step to the end of the last step;
  model loading and data preparation are outside it, everything in the loop (batching, forward,
  backward, clipping, optimiser, the frameworks' own logging) is inside.
- peak memory: the process's peak resident set during the training loop (Linux VmHWM, reset
  when training starts), and the whole process's peak (imports and model load included).

The parent prints a table, the ratios the targets are stated in (ours / TRL) and writes
results.json and results.md under --out.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IGNORE = -100  # finetune.data.IGNORE; repeated so the parent does not import torch
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RESULT_PREFIX = "BENCH_FINETUNE_RESULT "
# (system, packing) in the order each repeat runs them.
RUNS = (("ours", False), ("trl", False), ("ours", True), ("trl", True))
# hidden, intermediate, layers, heads. `small` (~13 M parameters; the tokenizer built for these
# rows has 769 tokens, so the output head is small) is big enough that the model's matmuls, not
# the frameworks' bookkeeping, set the pace; `demo` (3.4 M) is the demo model's shape.
SHAPES = {"demo": (256, 688, 4, 4), "small": (512, 1376, 4, 8)}


@dataclass(frozen=True)
class BenchConfig:
    """What every system trains with."""

    shape: str = "small"
    rows: int = 4000
    max_turns: int = 1  # a row is a conversation of 1..max_turns question-answer turns
    precision: str = "auto"  # finetune's setting; TRL gets bf16 exactly when ours uses it
    compile: bool = False  # torch.compile: ours with --compile, TRL with torch_compile
    steps: int = 30
    warmup: int = 3  # steps left out of the timing (allocator, caches, first-use costs)
    batch_tokens: int = 2048  # tokens per optimiser step, padding included (ours)
    max_seq_len: int = 1024  # our trainer's and TRL's default
    lr: float = 1e-3
    lr_warmup_steps: int = 2
    rank: int = 16
    alpha: float = 32.0
    seed: int = 0
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)


# --- measurement (runs inside each system's process) ----------------------------------------


def read_peak_rss_mib() -> float:
    """The process's peak resident set since start or since the last reset, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count from the current RSS (Linux); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class StepMeter:
    """Step end times, token counts and losses of one training run, and its peak memory."""

    warmup: int
    ends: list[float] = field(default_factory=list)
    useful: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    process_peak_mib: float = 0.0
    loop_peak_mib: float = 0.0
    peak_was_reset: bool = False

    def start(self) -> None:
        """Training begins: keep the peak so far, then count the loop's peak on its own."""
        self.process_peak_mib = read_peak_rss_mib()
        self.peak_was_reset = reset_peak_rss()

    def batch(self, useful: int, total: int, rows: int, loss: float) -> None:
        """One step's batch: non-padding tokens, all tokens, training rows, and its loss."""
        self.useful.append(useful)
        self.total.append(total)
        self.rows.append(rows)
        self.losses.append(loss)

    def end_step(self) -> None:
        """The optimiser step is done."""
        self.ends.append(time.perf_counter())
        self.loop_peak_mib = read_peak_rss_mib()  # a high-water mark: the last read is the peak

    def summary(self) -> dict[str, Any]:
        """The run's figures (see `rates`), losses and memory."""
        return {
            **rates(self.ends, self.useful, self.total, self.warmup),
            "steps": len(self.ends),
            "rows_per_step": statistics.mean(self.rows) if self.rows else None,
            "first_loss": self.losses[0] if self.losses else None,
            "last_loss": self.losses[-1] if self.losses else None,
            "loop_peak_rss_mib": self.loop_peak_mib if self.peak_was_reset else None,
            "process_peak_rss_mib": max(self.process_peak_mib, self.loop_peak_mib),
        }


def rates(
    ends: Sequence[float], useful: Sequence[int], total: Sequence[int], warmup: int
) -> dict[str, Any]:
    """Token rates over the steps after `warmup`: from the end of the last warm-up step to the end
    of the last step, counting the tokens of the steps in between."""
    if warmup < 1 or len(ends) <= warmup:
        raise ValueError(f"need more than {max(warmup, 1)} steps, got {len(ends)}")
    seconds = ends[-1] - ends[warmup - 1]
    useful_tokens, all_tokens = sum(useful[warmup:]), sum(total[warmup:])
    return {
        "timed_steps": len(ends) - warmup,
        "seconds": seconds,
        "useful_tokens": useful_tokens,
        "tokens_incl_padding": all_tokens,
        "useful_tok_s": useful_tokens / seconds,
        "tok_s_incl_padding": all_tokens / seconds,
        "padding_fraction": 1 - useful_tokens / all_tokens if all_tokens else 0.0,
        "s_per_step": seconds / (len(ends) - warmup),
    }


def count_rows(input_ids: Any, position_ids: Any, pad_id: int) -> int:
    """Training rows in a batch: each row starts at position 0 with a real token; without
    position ids (TRL's padded batches), one per tensor row."""
    if position_ids is None:
        return int(input_ids.shape[0])
    return int(((position_ids == 0) & (input_ids != pad_id)).sum())


def trl_labels(targets: Sequence[int]) -> list[int]:
    """Our targets (token t predicts targets[t]) as TRL labels (unshifted: labels[t] is learned
    from the tokens before t; the model shifts them). The same loss positions, moved by one."""
    return [IGNORE, *targets[:-1]]


# --- the two systems ------------------------------------------------------------------------


def run_ours(
    config: BenchConfig, model_dir: Path, data: Path, packing: bool, pad_id: int
) -> tuple[StepMeter, int]:
    """Train with `finetune.trainer.train`, timing each step; the meter and trainable params."""
    import finetune.trainer as trainer
    from finetune.settings import TrainSettings

    meter, trainable_params = StepMeter(config.warmup), [0]
    step = trainer._train_step

    # train() has no per-step hook: wrapping the step function it calls times the loop as is.
    def timed_step(model: Any, batch: Any, optimizer: Any, trainable: Any, *rest: Any) -> float:
        if not meter.ends and not meter.losses:
            trainable_params[0] = sum(p.numel() for p in trainable)
            meter.start()
        loss = step(model, batch, optimizer, trainable, *rest)
        rows = count_rows(batch.input_ids, batch.position_ids, pad_id)
        meter.batch(int((batch.input_ids != pad_id).sum()), batch.num_tokens, rows, loss)
        meter.end_step()
        return loss

    trainer._train_step = timed_step  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as tmp:
        settings = TrainSettings(
            base=str(model_dir),
            data=data,
            out=Path(tmp) / "adapter",
            rank=config.rank,
            alpha=config.alpha,
            dropout=0.0,
            target_modules=list(LLAMA_PROJECTIONS),
            lr=config.lr,
            warmup_steps=config.lr_warmup_steps,
            epochs=1000.0,  # max_steps decides
            max_steps=config.steps,
            batch_tokens=config.batch_tokens,
            max_seq_len=config.max_seq_len,
            packing=packing,
            seed=config.seed,
            progress=False,
            device="cpu",
            precision=config.precision,
            compile=config.compile,
        )
        trainer.train(settings)
    return meter, trainable_params[0]


def trl_rows_per_step(examples: Sequence[Any], config: BenchConfig, packing: bool) -> int:
    """TRL's batch size (in its own units) that matches our tokens per step.

    Padded: the median number of rows our padded batches hold for this data and budget.
    Packed: as many `max_seq_len` sequences as ours puts in a step.
    """
    if packing:
        return max(1, config.batch_tokens // config.max_seq_len)
    from finetune.batching import make_batches

    batches = make_batches(list(examples), config.batch_tokens, config.max_seq_len, False, 0)
    return max(1, round(statistics.median(b.input_ids.shape[0] for b in batches)))


def run_trl(
    config: BenchConfig, model_dir: Path, data: Path, packing: bool, pad_id: int
) -> tuple[StepMeter, int]:
    """Train with TRL's SFTTrainer on our tokenization, timing each step; as `run_ours`."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTTrainer

    from finetune.data import load_dataset

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    context = int(model.config.max_position_embeddings)
    examples = load_dataset(data, tokenizer, min(config.max_seq_len, context), context).examples
    dataset = Dataset.from_list(
        [{"input_ids": e.input_ids, "labels": trl_labels(e.targets)} for e in examples]
    )
    meter = StepMeter(config.warmup)

    class TimedSFTTrainer(SFTTrainer):
        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            ids = inputs["input_ids"]
            useful, total = int((ids != pad_id).sum()), ids.numel()
            rows = count_rows(ids, inputs.get("position_ids"), pad_id)
            loss = super().training_step(model, inputs, num_items_in_batch)
            meter.batch(useful, total, rows, float(loss))
            return loss

    class Timer(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            meter.start()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            meter.end_step()

    batch_size = trl_rows_per_step(examples, config, packing)
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as tmp:
        trainer = TimedSFTTrainer(
            model=model,
            args=_sft_config(config, Path(tmp), packing, batch_size),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=config.rank,
                lora_alpha=config.alpha,
                lora_dropout=0.0,
                target_modules=list(LLAMA_PROJECTIONS),
                bias="none",
                task_type="CAUSAL_LM",
            ),
            callbacks=[Timer()],
        )
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        trainer.train()
    return meter, trainable


def _sft_config(config: BenchConfig, out: Path, packing: bool, batch_size: int) -> Any:
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out),
        max_steps=config.steps,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",  # ours: linear warm-up, then cosine to 0 at the last step
        warmup_steps=config.lr_warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=config.max_seq_len,
        packing=packing,
        packing_strategy="bfd",  # TRL's default; implies padding-free batches
        # TRL defaults to gradient checkpointing and bf16; ours does not checkpoint, and uses
        # bf16 where `precision` says so: both train the same way.
        gradient_checkpointing=False,
        bf16=_bf16(config),
        torch_compile=config.compile,
        use_cpu=True,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=10,  # TRL's default
    )


# --- one system in its own process ----------------------------------------------------------


def run_one(
    system: str, packing: bool, config: BenchConfig, model_dir: Path, data: Path
) -> dict[str, Any]:
    """Train one system and return its figures (what `_run` prints)."""
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    pad_id = int(AutoTokenizer.from_pretrained(model_dir).pad_token_id)
    runner = run_ours if system == "ours" else run_trl
    meter, trainable = runner(config, model_dir, data, packing, pad_id)
    return {
        "system": system_label(system, packing),
        "trainable_params": trainable,
        "threads": torch.get_num_threads(),
        "bf16": _bf16(config),
        **meter.summary(),
    }


def _bf16(config: BenchConfig) -> bool:
    """Whether both trainers run in bf16: what our trainer picks for this CPU (`precision`)."""
    import torch

    from finetune.trainer import uses_bf16

    return uses_bf16(config.precision, torch.device("cpu"))


def system_label(system: str, packing: bool) -> str:
    """The table's name for a run."""
    name = "ours" if system == "ours" else "TRL SFTTrainer"
    return f"{name} ({'packed' if packing else 'padded'})"


def run_in_subprocess(
    system: str, packing: bool, config: BenchConfig, model_dir: Path, data: Path, log: Path
) -> dict[str, Any]:
    """`run_one` in a fresh process; its output goes to `log`, its result line is parsed."""
    cmd = [
        sys.executable, str(Path(__file__)), "_run",
        "--system", system, "--model-dir", str(model_dir), "--data", str(data),
        "--config", json.dumps(asdict(config)),
    ] + (["--packing"] if packing else [])  # fmt: skip
    # KANGAROO_FT_* variables would override our trainer's settings (env ranks above init values).
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANGAROO_FT_")}
    with log.open("w") as out:
        done = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    text = log.read_text(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"{system_label(system, packing)} failed:\n{text[-3000:]}")
    return parse_result(text)


def parse_result(text: str) -> dict[str, Any]:
    """The result a `_run` process printed (its last result line)."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("no result line in the output")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return result


# --- report ---------------------------------------------------------------------------------


def median_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per system, in first-seen order: each numeric figure's median over the repeats,
    plus the spread of useful tokens/s (`useful_tok_s_min` / `_max`) and `runs`."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["system"], []).append(run)
    rows = []
    for system, group in groups.items():
        row: dict[str, Any] = {"system": system, "runs": len(group)}
        for key, value in group[0].items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "repeat":
                values = [g[key] for g in group if g.get(key) is not None]
                row[key] = statistics.median(values) if values else None
        speeds = [g["useful_tok_s"] for g in group]
        row["useful_tok_s_min"], row["useful_tok_s_max"] = min(speeds), max(speeds)
        rows.append(row)
    return rows


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


# name: (ours, TRL, figure, op, target); op says which way is better for ours.
COMPARISONS: dict[str, tuple[str, str, str, str, float | None]] = {
    "speed padded vs TRL padded": ("padded", "padded", "useful_tok_s", ">=", 1.0),
    "speed packed vs TRL padded": ("packed", "padded", "useful_tok_s", ">=", 2.0),
    "speed packed vs TRL packed": ("packed", "packed", "useful_tok_s", ">=", None),
    "memory padded vs TRL padded": ("padded", "padded", "loop_peak_rss_mib", "<=", None),
    "memory packed vs TRL padded": ("packed", "padded", "loop_peak_rss_mib", "<=", None),
    "memory packed vs TRL packed": ("packed", "packed", "loop_peak_rss_mib", "<=", None),
}


# Packing can at most remove the padding of TRL's padded batches: the speed-up that alone buys.
CEILING = "packing ceiling vs TRL padded"


def ratios(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Each comparison of COMPARISONS as ours / TRL (None where a run is missing), and CEILING."""
    at = {row["system"]: row for row in rows}
    verdict = {}
    for name, (ours, theirs, key, _, _) in COMPARISONS.items():
        mine = at.get(system_label("ours", ours == "packed"), {})
        other = at.get(system_label("trl", theirs == "packed"), {})
        verdict[name] = ratio(mine.get(key), other.get(key))
    padding = at.get(system_label("trl", False), {}).get("padding_fraction")
    verdict[CEILING] = None if padding is None else ratio(1.0, 1.0 - padding)
    return verdict


def ratios_text(verdict: dict[str, float | None]) -> str:
    """The ratios, with their targets where the task states one, one line each."""
    lines = ["\nRatios (ours / TRL SFTTrainer):"]
    for name, (_, _, _, op, target) in COMPARISONS.items():
        value = verdict.get(name)
        shown = "n/a" if value is None else f"{value:.2f}x"
        if target is None:
            lines.append(f"  {name:28s} {shown:>7s}  ({op.replace('=', '')} 1 is better for ours)")
            continue
        met = value is not None and (value >= target if op == ">=" else value <= target)
        verdict_word = "met" if met else "MISSED"
        lines.append(f"  {name:28s} {shown:>7s}  target {op} {target}x  {verdict_word}")
    if (ceiling := verdict.get(CEILING)) is not None:
        lines.append(
            f"  ({CEILING}: {ceiling:.2f}x, what removing all of TRL's padding would buy at the"
            " same speed per token)"
        )
    return "\n".join(lines)


COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("useful_tok_s", "useful tok/s", "{:,.0f}".format),
    ("tok_s_incl_padding", "tok/s incl. pad", "{:,.0f}".format),
    ("padding_fraction", "padding", "{:.0%}".format),
    ("rows_per_step", "rows/step", "{:.1f}".format),
    ("s_per_step", "s/step", "{:.2f}".format),
    ("loop_peak_rss_mib", "loop peak RSS MiB", "{:,.0f}".format),
    ("process_peak_rss_mib", "process peak RSS MiB", "{:,.0f}".format),
    ("trainable_params", "trainable params", "{:,.0f}".format),
    ("first_loss", "first loss", "{:.3f}".format),
    ("last_loss", "last loss", "{:.3f}".format),
    ("runs", "runs", "{:.0f}".format),
]


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The median rows as a Markdown table."""
    header = ["system"] + [title for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row["system"]]
        cells += ["–" if row.get(key) is None else fmt(row[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(
    out: Path, rows: list[dict[str, Any]], verdict: dict[str, Any], meta: dict[str, Any]
) -> None:
    """results.json (everything, every run) and results.md (table and ratios)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "ratios": verdict}, indent=2)
    )
    (out / "results.md").write_text(markdown_table(rows) + "\n" + ratios_text(verdict) + "\n")


# --- commands -------------------------------------------------------------------------------


def prepare_model(shape: str) -> Path:
    """The random-weight base model of `shape`, built once into the cache."""
    from finetune.demo import skills
    from finetune.demo.build import ModelShape, build_base_model
    from server.settings import load_settings

    cache = load_settings([]).cache_dir
    target = cache / f"bench-finetune-{shape}"
    if not (target / "config.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        shape_ = ModelShape(*SHAPES[shape])
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            build_base_model(Path(tmp) / "m", shape=shape_, corpus=skills.corpus())
            (Path(tmp) / "m").rename(target)
    return target


def write_data(path: Path, rows: int, seed: int, max_turns: int = 1) -> None:
    """`rows` chat rows of finetune/demo/skills.py as JSONL: conversations of 1 to `max_turns`
    question-answer turns (uniformly), so that with `max_turns` > 1 row lengths spread as in
    real chat data instead of all being about as short (15-40 tokens for one turn)."""
    import random

    from finetune.demo import skills

    rng = random.Random(seed)
    turns = iter(skills.train_rows(seed, rows * max_turns))
    with path.open("w", encoding="utf-8") as f:
        for _ in range(rows):
            messages = [
                m for _ in range(rng.randint(1, max_turns)) for m in next(turns)["messages"]
            ]
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


def compare(config: BenchConfig, repeats: int, out: Path) -> None:
    """Every run of RUNS, `repeats` times interleaved; table, ratios and result files."""
    out.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model(config.shape)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        data = Path(tmp) / "train.jsonl"
        write_data(data, config.rows, config.seed, config.max_turns)
        for repeat in range(repeats):
            for system, packing in RUNS:
                log = out / f"{system}-{'packed' if packing else 'padded'}.log"
                print(f"[{repeat + 1}/{repeats}] {system_label(system, packing)} ...", flush=True)
                result = run_in_subprocess(system, packing, config, model_dir, data, log)
                print(f"    {result['useful_tok_s']:,.0f} useful tok/s, "
                      f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f}, "
                      f"{result['trainable_params']:,} trainable params", flush=True)  # fmt: skip
                runs.append(result | {"repeat": repeat})
    rows = median_rows(runs)
    verdict = ratios(rows)
    meta = {"config": asdict(config), "repeats": repeats, "model": str(model_dir)}
    meta |= {"command": sys.argv, "machine": _machine(), "versions": _versions(), "runs": runs}
    write_results(out, rows, verdict, meta)
    print(markdown_table(rows))
    print(ratios_text(verdict))


def _machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}  # fmt: skip


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = BenchConfig()
    cmp = commands.add_parser("compare", help="ours vs TRL, every run in its own process")
    cmp.add_argument("--shape", choices=sorted(SHAPES), default=defaults.shape)
    cmp.add_argument("--rows", type=int, default=defaults.rows, help="training rows")
    cmp.add_argument(
        "--max-turns", type=int, default=defaults.max_turns, help="turns per row: 1..this"
    )
    cmp.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=defaults.precision)
    cmp.add_argument("--compile", action="store_true", help="torch.compile in both trainers")
    cmp.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps")
    cmp.add_argument("--warmup", type=int, default=defaults.warmup, help="steps not timed")
    cmp.add_argument("--batch-tokens", type=int, default=defaults.batch_tokens)
    cmp.add_argument("--max-seq-len", type=int, default=defaults.max_seq_len)
    cmp.add_argument("--lr", type=float, default=defaults.lr)
    cmp.add_argument("--seed", type=int, default=defaults.seed)
    cmp.add_argument("--threads", type=int, default=defaults.threads, help="torch threads")
    cmp.add_argument("--repeats", type=int, default=1, help="runs of each system, interleaved")
    cmp.add_argument("--out", type=Path, default=REPO / "scripts" / "results" / "finetune-cpu")
    one = commands.add_parser("_run")  # internal: one system in its own process
    one.add_argument("--system", choices=["ours", "trl"], required=True)
    one.add_argument("--packing", action="store_true")
    for flag in ("--model-dir", "--data", "--config"):
        one.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    if args.command == "compare":
        config = BenchConfig(
            shape=args.shape,
            rows=args.rows,
            max_turns=args.max_turns,
            precision=args.precision,
            compile=args.compile,
            steps=args.steps,
            warmup=args.warmup,
            batch_tokens=args.batch_tokens,
            max_seq_len=args.max_seq_len,
            lr=args.lr,
            seed=args.seed,
            threads=args.threads,
        )
        compare(config, args.repeats, args.out)
    else:
        config = BenchConfig(**json.loads(args.config))
        result = run_one(args.system, args.packing, config, Path(args.model_dir), Path(args.data))
        print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
