"""Benchmark statistics and reports: per-run summary, Markdown table, PNG plots."""

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from scripts.loadgen import RequestRecord, token_sources

T = TypeVar("T")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100, linear interpolation), or None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarize(records: Sequence[RequestRecord], duration_s: float) -> dict[str, Any]:
    """One run's figures. Latencies in milliseconds; rates per second of wall time."""
    ok = [r for r in records if r.ok]
    ttfts = [r.ttft * 1000 for r in ok if r.ttft is not None]
    gaps = [gap * 1000 for r in ok for gap in r.chunk_gaps]
    latencies = [r.latency * 1000 for r in ok]
    output_tokens = sum(r.output_tokens for r in ok)
    return {
        "requests_ok": len(ok),
        "requests_failed": len(records) - len(ok),
        "duration_s": duration_s,
        "output_tokens": output_tokens,
        "output_tok_s": output_tokens / duration_s if duration_s > 0 else 0.0,
        "requests_s": len(ok) / duration_s if duration_s > 0 else 0.0,
        "ttft_ms_p50": percentile(ttfts, 50),
        "ttft_ms_p90": percentile(ttfts, 90),
        "ttft_ms_p99": percentile(ttfts, 99),
        "itl_ms_p50": percentile(gaps, 50),
        "itl_ms_p99": percentile(gaps, 99),
        "e2e_ms_p50": percentile(latencies, 50),
        "e2e_ms_p99": percentile(latencies, 99),
        "token_count_source": ",".join(sorted(token_sources(records))) or "none",
        "errors": sorted({r.error for r in records if r.error})[:5],
    }


COLUMNS = [
    ("concurrency", "conc.", "{}"),
    ("output_tok_s", "tok/s", "{:,.0f}"),
    ("requests_s", "req/s", "{:.2f}"),
    ("ttft_ms_p50", "TTFT p50 ms", "{:.0f}"),
    ("ttft_ms_p90", "TTFT p90 ms", "{:.0f}"),
    ("ttft_ms_p99", "TTFT p99 ms", "{:.0f}"),
    ("itl_ms_p50", "ITL p50 ms", "{:.1f}"),
    ("itl_ms_p99", "ITL p99 ms", "{:.1f}"),
    ("e2e_ms_p50", "E2E p50 ms", "{:.0f}"),
    ("e2e_ms_p99", "E2E p99 ms", "{:.0f}"),
    ("requests_failed", "failed", "{:.0f}"),
]


def median_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (system, concurrency): the median of each figure over repeated runs.

    `output_tok_s_min` / `_max` keep the spread of throughput; `runs` counts the repeats.
    """
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["system"], run["concurrency"]), []).append(run)
    rows = []
    for (system, concurrency), group in groups.items():
        row: dict[str, Any] = {"system": system, "concurrency": concurrency, "runs": len(group)}
        for key, value in group[0].items():
            if isinstance(value, int | float) and key not in row and key != "repeat":
                values = [g[key] for g in group if g.get(key) is not None]
                row[key] = float(np.median(values)) if values else None
        throughputs = [g["output_tok_s"] for g in group]
        row["output_tok_s_min"], row["output_tok_s_max"] = min(throughputs), max(throughputs)
        rows.append(row)
    return rows


def alternate(
    sides: dict[str, T], run: Callable[[T], dict[str, Any]], repeats: int, keys: Sequence[str]
) -> dict[str, Any]:
    """`run` every side in turn (ABAB...), `repeats` times: each run's summary, the medians of
    `keys` per side and the failed requests of all runs. Turns, not blocks, so a drift of the
    machine's speed lands on every side alike."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for _ in range(repeats):
        for side, load in sides.items():
            runs[side].append(run(load))
    median = {
        side: {key: statistics.median(run[key] for run in side_runs) for key in keys}
        for side, side_runs in runs.items()
    }
    failed = sum(run["requests_failed"] for side_runs in runs.values() for run in side_runs)
    return {"runs": runs, "median": median, "failed": failed}


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows (each a summary plus `system` and `concurrency`) as a Markdown table."""
    header = ["system"] + [title for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [row["system"]] + [_cell(row.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def plot(rows: Sequence[dict[str, Any]], key: str, ylabel: str, path: Path) -> None:
    """One line per system of `key` against concurrency, log-scaled x axis, saved as PNG."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for system in dict.fromkeys(row["system"] for row in rows):
        points = [(r["concurrency"], r[key]) for r in rows if r["system"] == system and r[key]]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({row["concurrency"] for row in rows}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
