"""The training record: `metrics.jsonl` (one JSON object per event), the loss-curve PNG, and
the warning for a run that learned nothing."""

import json
from pathlib import Path
from typing import Any

from finetune import auto

# A loss that fell by less than this fraction of where it started has not really moved.
MEANINGFUL_DROP = 0.05


class MetricsLog:
    """Appends one JSON line per event to a file; kept across a resumed run."""

    def __init__(self, path: Path, keep_until_step: int) -> None:
        """Open `path`, dropping lines after `keep_until_step` (a resumed run redoes them)."""
        self.path = path
        kept = [row for row in read_metrics(path) if row["step"] <= keep_until_step]
        path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def write(self, **row: Any) -> None:
        """Append one event."""
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def last(self, key: str) -> float:
        """The latest value of `key` on record."""
        values = [row[key] for row in read_metrics(self.path) if key in row]
        return float(values[-1]) if values else float("nan")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every event of a metrics file (none if it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    """Draw train loss (and eval loss, when measured) against the step."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train_loss", "-"), ("eval_loss", "o-")):
        points = [(row["step"], row[key]) for row in rows if key in row]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, style, label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("loss per target token")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def no_progress_warning(rows: list[dict[str, Any]], plan: auto.Plan) -> str | None:
    """Why the run looks as if it learned nothing, naming the flags to change; None if it did.

    The train loss of the first steps is compared with that of the last tenth of the run; the
    eval loss before the first step (when there is an eval set) with the last one.
    """
    train = [row["train_loss"] for row in rows if "train_loss" in row]
    evals = [row["eval_loss"] for row in rows if "eval_loss" in row]
    if not train:
        return None
    head = train[: max(1, min(5, len(train) // 10))]
    tail = train[-max(1, len(train) // 10) :]
    first, last = sum(head) / len(head), sum(tail) / len(tail)
    if last <= (1 - MEANINGFUL_DROP) * first:
        if len(evals) >= 2 and evals[-1] > (1 - MEANINGFUL_DROP) * evals[0]:
            return (
                f"The train loss fell ({first:.3g} -> {last:.3g}) but the eval loss did not "
                f"({evals[0]:.3g} -> {evals[-1]:.3g}): the run learned its training rows, not "
                "what carries over to the eval rows. Add more varied rows, or train fewer "
                "--epochs."
            )
        return None
    return (
        f"This run did not learn: the train loss went {first:.3g} -> {last:.3g} "
        f"({(last - first) / first:+.1%}) over {plan.total_steps} steps. " + _causes(plan)
    )


def no_gain_warning(tuned: float, base: float, plan: auto.Plan) -> str | None:
    """A warning when the adapter serves the eval rows no better than the base model does."""
    if tuned > base:
        return None
    return (
        f"The adapter does not improve what vLLM serves: {tuned:.1%} of the eval rows right with "
        f"it, {base:.1%} without. " + _causes(plan)
    )


def _causes(plan: auto.Plan) -> str:
    causes = []
    if plan.total_steps < auto.MIN_STEPS:
        fix = (
            "raise or drop --max-steps"
            if plan.reasons.get("steps") == "max_steps"
            else "raise --epochs or lower --batch-tokens, or leave both on auto"
        )
        causes.append(
            f"too few optimiser steps ({plan.total_steps}; {auto.MIN_STEPS} or more learn): {fix}"
        )
    if plan.warmup_steps >= plan.total_steps / 2:
        causes.append(
            f"the warm-up took {plan.warmup_steps} of the {plan.total_steps} steps: "
            "lower --warmup-steps"
        )
    causes.append(f"a learning rate too low ({plan.lr:.3g}): try --lr {3 * plan.lr:.2g}")
    return "Likely causes:\n  - " + "\n  - ".join(causes)
