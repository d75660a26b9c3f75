"""The training record: `metrics.jsonl` (one JSON object per event) and the loss-curve PNG."""

import json
from pathlib import Path
from typing import Any


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
