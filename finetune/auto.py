"""Hyperparameters chosen from the data and the model, for every setting left at `auto`.

Users of OpenAI's fine-tuning API never tune epochs, batch size or learning rate: it picks them
from the data. These rules do the same, each from a published default and one measured fact:

- batch: about 0.2 % of the rows per optimiser step (OpenAI's rule, 1..256 rows), counted in
  tokens, at least one packed sequence and at most `MAX_BATCH_TOKENS` (no gradient accumulation,
  so a step's tokens are in memory at once);
- epochs: 3; fewer for large datasets, so that about 25,000 rows are seen (OpenAI's bounds);
  more for small ones, so that the run makes at least `MIN_STEPS` optimiser steps (measured on
  the demo model, 200 rows teaching one reply: 120 steps gave 0-17 % of held-out prompts
  right, 160 steps 100 %; the old defaults' 3 steps learned nothing);
- learning rate: 2e-4 for LoRA at hidden size 4096, 2e-5 for full fine-tuning, scaled by
  4096 / hidden size (Adam's step size for width-scaled models, as in muP): for LoRA that gives
  QLoRA's published rates (2e-4 at 7B, 1e-4 at 33B and 65B) and lets narrow models take the
  larger steps they need (measured: the 256-wide demo model learns nothing in 120 steps at 8e-4);
- warm-up: `warmup_fraction` of the run, never longer than the run.

Every explicit setting wins; what was chosen, and why, is printed and kept in the manifest.
"""

import math
from dataclasses import dataclass, field

# See the module docstring for where each number comes from.
BATCH_ROW_FRACTION = 0.002
MAX_BATCH_ROWS = 256
MAX_BATCH_TOKENS = 8192
DEFAULT_EPOCHS = 3
MAX_ROWS_SEEN = 25_000
MIN_STEPS = 200
MAX_EPOCHS = 25
REFERENCE_WIDTH = 4096
LORA_LR = 2e-4
FULL_LR = 2e-5


@dataclass(frozen=True)
class DataShape:
    """What the rules read of the training data (valid rows, after truncation)."""

    rows: int
    tokens: int
    longest: int

    @property
    def mean_tokens(self) -> float:
        """Tokens in an average row."""
        return self.tokens / max(self.rows, 1)


@dataclass
class Plan:
    """The hyperparameters a run uses, why each has its value, and which `auto` chose."""

    epochs: float
    lr: float
    batch_tokens: int
    total_steps: int
    warmup_steps: int
    reasons: dict[str, str] = field(default_factory=dict)  # name -> why; "set" when given
    chosen: tuple[str, ...] = ()  # the names `auto` chose

    def lines(self) -> list[str]:
        """One line per hyperparameter: its value and why."""
        values = {
            "epochs": f"{self.epochs:g}",
            "lr": f"{self.lr:.3g}",
            "batch_tokens": str(self.batch_tokens),
            "steps": str(self.total_steps),
            "warmup_steps": str(self.warmup_steps),
        }
        return [
            f"  {name:<13}{value:>8}   {self.reasons.get(name, 'set')}"
            for name, value in values.items()
        ]

    def schedule(self) -> dict[str, object]:
        """The learning-rate schedule, as the metrics file records it before the first step."""
        return {
            "schedule": {
                "peak_lr": self.lr,
                "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps,
                "decay": "cosine",
                "epochs": self.epochs,
                "batch_tokens": self.batch_tokens,
            }
        }


def batch_tokens(shape: DataShape, pack_len: int | None) -> tuple[int, str]:
    """Tokens per step for `shape`; `pack_len` is the packed sequence length (None: padded)."""
    rows = min(MAX_BATCH_ROWS, max(1, round(BATCH_ROW_FRACTION * shape.rows)))
    wanted = rows * shape.mean_tokens
    unit = pack_len or shape.longest  # a step holds at least one sequence (or the longest row)
    tokens = max(unit, round(wanted / unit) * unit)
    reason = f"~{rows} row(s) per step (0.2 % of {shape.rows}), {unit}-token sequences"
    if tokens > MAX_BATCH_TOKENS:
        tokens = max(unit, MAX_BATCH_TOKENS // unit * unit)
        reason += f", capped at {MAX_BATCH_TOKENS} tokens (memory)"
    return tokens, reason


def epochs(rows: int, steps_per_epoch: int) -> tuple[float, str]:
    """Passes over `rows` rows, whose one pass takes `steps_per_epoch` steps."""
    if rows * DEFAULT_EPOCHS > MAX_ROWS_SEEN:
        count = max(1, MAX_ROWS_SEEN // rows)
        return count, f"about {MAX_ROWS_SEEN:,} rows seen ({rows:,} rows)"
    if DEFAULT_EPOCHS * steps_per_epoch < MIN_STEPS:
        count = min(MAX_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch))
        return count, f"at least {MIN_STEPS} steps ({steps_per_epoch} per epoch)"
    return DEFAULT_EPOCHS, f"{DEFAULT_EPOCHS} passes ({steps_per_epoch} steps each)"


def learning_rate(hidden_size: int, full: bool) -> tuple[float, str]:
    """Peak learning rate for a model of `hidden_size`: LoRA, or every weight when `full`."""
    base = FULL_LR if full else LORA_LR
    lr = base * REFERENCE_WIDTH / hidden_size
    method = "full fine-tuning" if full else "LoRA"
    return lr, f"{method}: {base:g} x {REFERENCE_WIDTH}/{hidden_size}"


def warmup_steps(total_steps: int, asked: int | None, fraction: float) -> tuple[int, str]:
    """Warm-up steps: as asked (at most the run), or `fraction` of the run."""
    if asked is not None:
        if asked > total_steps:
            return total_steps, f"asked {asked}, capped at the run's {total_steps} steps"
        return asked, "set"
    return round(fraction * total_steps), f"{fraction:g} of the run"
