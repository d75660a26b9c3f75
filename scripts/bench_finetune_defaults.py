"""Fine-tuning with no flags: the `auto` defaults against the old fixed defaults, same data.

Each dataset teaches the demo model one fixed reply (finetune/demo/skills.py, 200 and 2,000
rows; 40 held-out prompts on topics training never saw). Each run trains with every other
setting at its default, then makes the accuracy report in vLLM. Printed per run: the steps, the
time to train, the time of the whole command (report included) and the held-out accuracy with
and without the adapter; and per dataset the accuracy and time ratios auto / old.

    .venv/bin/python scripts/bench_finetune_defaults.py --out scripts/results/finetune-defaults
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# What `finetune train` used before `auto`: 1 epoch, lr 2e-4, 4,096-token steps, 10 warm-up steps.
OLD_DEFAULTS = {"epochs": 1.0, "lr": 2e-4, "batch_tokens": 4096, "warmup_steps": 10}


def run(base: Path, rows: int, name: str, flags: dict[str, Any], work: Path) -> dict[str, Any]:
    """Train one adapter on `rows` fixed-reply rows with `flags`; its figures."""
    from finetune import trainer
    from finetune.demo import skills
    from finetune.settings import TrainSettings

    folder = work / f"{name}-{rows}"
    folder.mkdir()
    data, held_out = folder / "train.jsonl", folder / "eval.jsonl"
    for path, records in (
        (data, skills.fixed_reply_rows(rows, seed=0)),
        (held_out, skills.fixed_reply_heldout()),
    ):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = TrainSettings(
        base=str(base), data=data, eval=held_out, out=folder / "out", progress=False, **flags
    )
    trained_at: list[float] = []
    real_export = trainer._export

    def timed_export(*args: Any, **kwargs: Any) -> None:
        real_export(*args, **kwargs)
        trained_at.append(time.perf_counter())

    trainer._export = timed_export
    started = time.perf_counter()
    try:
        result = trainer.train(settings)
    finally:
        trainer._export = real_export
    report = result.eval_accuracy
    return {
        "config": name,
        "rows": rows,
        "steps": result.steps,
        "train_s": round(trained_at[0] - started, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "tuned": None if report is None else report.tuned,
        "base": None if report is None else report.base,
        "warning": result.warning,
    }


def table(results: list[dict[str, Any]]) -> list[str]:
    """The runs as a Markdown table, then the ratios per dataset."""
    lines = [
        "| rows | defaults | steps | train s | with report s | held-out right (adapter) | "
        "(base) | warned |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['config']} | {r['steps']} | {r['train_s']} | {r['total_s']} | "
            f"{r['tuned']:.1%} | {r['base']:.1%} | {'yes' if r['warning'] else 'no'} |"
        )
    for rows in sorted({r["rows"] for r in results}):
        by = {r["config"]: r for r in results if r["rows"] == rows}
        new, old = by["auto"], by["old"]
        gain = "n/a" if not old["tuned"] else f"{new['tuned'] / old['tuned']:.2f}x"
        lines.append(
            f"\n{rows:,} rows: accuracy auto {new['tuned']:.1%} vs old {old['tuned']:.1%} "
            f"({gain}); time with the report {new['total_s'] / old['total_s']:.2f}x old's"
        )
    return lines


def main() -> None:
    """Run both configurations on both datasets; print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--out", type=Path, help="folder for results.json and results.md")
    args = parser.parse_args()

    from finetune.demo.build import ensure_demo_model
    from server.settings import load_settings

    base = ensure_demo_model(load_settings([]).cache_dir)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as tmp:
        for rows in args.rows:
            for name, flags in (("auto", {}), ("old", OLD_DEFAULTS)):
                results.append(run(base, rows, name, flags, Path(tmp)))
                print(results[-1], flush=True)
    lines = table(results)
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
