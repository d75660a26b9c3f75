"""Benchmark statistics: percentiles, summaries, ratios, the Markdown table and plots."""

from pathlib import Path

import pytest

from scripts.bench_report import markdown_table, median_rows, percentile, plot, ratio, summarize
from scripts.loadgen import RequestRecord


def test_percentile_interpolates_linearly() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 50) == 25.0
    assert percentile(values, 100) == 40.0
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)
    assert percentile([], 50) is None


def _record(
    start: float, first: float, end: float, gaps: list[float], tokens: int
) -> RequestRecord:
    return RequestRecord(
        start=start, ok=True, first_token_at=first, end=end, chunk_gaps=gaps, output_tokens=tokens
    )


def test_summary_figures() -> None:
    records = [
        _record(0.0, 0.1, 1.0, [0.01, 0.02], 10),
        _record(0.0, 0.3, 2.0, [0.03], 30),
        RequestRecord(start=0.0, end=0.5, error="HTTP 500"),
    ]
    s = summarize(records, duration_s=2.0)
    assert (s["requests_ok"], s["requests_failed"]) == (2, 1)
    assert s["output_tokens"] == 40
    assert s["output_tok_s"] == 20.0
    assert s["requests_s"] == 1.0
    assert s["ttft_ms_p50"] == pytest.approx(200.0)
    assert s["itl_ms_p50"] == pytest.approx(20.0)
    assert s["e2e_ms_p99"] == pytest.approx(1990.0)
    assert s["token_count_source"] == "usage"
    assert s["errors"] == ["HTTP 500"]


def test_ratio_handles_missing_values() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None


def test_markdown_table_and_plot(tmp_path: Path) -> None:
    rows = [
        {"system": "a", "concurrency": c, **summarize([_record(0, 0.1, 1, [0.01], 10)], 1.0)}
        for c in (1, 4)
    ]
    table = markdown_table(rows).splitlines()
    assert table[0].startswith("| system | conc. | tok/s")
    assert table[2].startswith("| a | 1 | 10 |")
    assert len(table) == 4
    plot(rows, "output_tok_s", "tok/s", tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_median_rows_over_repeats() -> None:
    def run(system: str, c: int, tok_s: float, ttft: float | None, repeat: int) -> dict:
        return {
            "system": system,
            "concurrency": c,
            "output_tok_s": tok_s,
            "ttft_ms_p99": ttft,
            "requests_failed": 0,
            "repeat": repeat,
            "token_count_source": "usage",
        }

    runs = [
        run("a", 1, 10.0, 5.0, 0),
        run("a", 1, 30.0, None, 1),
        run("a", 1, 20.0, 7.0, 2),
        run("b", 1, 1.0, 1.0, 0),
    ]
    rows = {(r["system"], r["concurrency"]): r for r in median_rows(runs)}
    a = rows[("a", 1)]
    assert a["output_tok_s"] == 20.0
    assert a["ttft_ms_p99"] == 6.0  # median of the values present
    assert (a["output_tok_s_min"], a["output_tok_s_max"], a["runs"]) == (10.0, 30.0, 3)
    assert "repeat" not in a
    assert rows[("b", 1)]["runs"] == 1
