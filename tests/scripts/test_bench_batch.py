"""The offline-batch benchmark's parts that run without an engine: the batch file it writes (valid
Batch API lines, varied, seeded), both command lines, and the medians, ratios and report."""

import json
from pathlib import Path

from scripts.bench import EngineSettings
from scripts.bench_batch import (
    SERVED_NAME,
    Setup,
    kangaroo_cmd,
    medians,
    ratios,
    report,
    vllm_cmd,
    write_batch_file,
)
from server.batch.lines import Line, parse


def test_the_batch_file_is_valid_varied_and_seeded(tmp_path: Path) -> None:
    path = write_batch_file(tmp_path / "in.jsonl", 300, seed=0)
    raw = path.read_bytes().splitlines()
    lines = [parse(number, row, "/v1/chat/completions") for number, row in enumerate(raw, 1)]
    assert all(isinstance(line, Line) for line in lines)
    bodies = [line.body for line in lines if isinstance(line, Line)]
    assert len({line.custom_id for line in lines if isinstance(line, Line)}) == 300
    assert {body["model"] for body in bodies} == {SERVED_NAME}
    assert {body["max_tokens"] for body in bodies} <= set(range(32, 65))
    assert len({body["max_tokens"] for body in bodies}) > 10
    assert 50 < sum(body["messages"][0]["role"] == "system" for body in bodies) < 150
    assert all(body["temperature"] == 0 and body["ignore_eos"] for body in bodies)
    again = write_batch_file(tmp_path / "again.jsonl", 300, seed=0)
    assert again.read_bytes() == path.read_bytes()


def test_both_systems_get_the_same_engine_settings(tmp_path: Path) -> None:
    setup = Setup("/models/m", EngineSettings(max_num_seqs=64), enforce_eager=True)
    ours = kangaroo_cmd(setup, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    theirs = vllm_cmd(setup, tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    assert ours[1:4] == ["-m", "server.batch", "run"]
    assert theirs[1:3] == ["-m", "vllm.entrypoints.openai.run_batch"]
    for flags in (ours, theirs):
        assert " ".join(setup.engine_flags()) in " ".join(flags)
        assert "--enforce-eager" in flags


def test_medians_ratios_and_the_verdict() -> None:
    def run(system: str, tok_s: float, first_line_s: float | None) -> dict:
        return {"system": system, "output_tok_s": tok_s, "output_tok_s_wall": tok_s / 2,
                "wall_s": 10.0, "first_line_s": first_line_s, "peak_rss_mib": 100.0,
                "lines_failed": 0}  # fmt: skip

    runs = [run("kangaroo", 90, 1.0), run("kangaroo", 110, 3.0), run("vllm", 100, None)]
    median = medians(runs)
    assert median["kangaroo"]["output_tok_s"] == 100
    assert median["kangaroo"]["first_line_s"] == 2.0
    assert median["vllm"]["first_line_s"] is None
    ratio_of = ratios(median)
    assert ratio_of["output_tok_s"] == 1.0
    assert ratio_of["first_line_s"] is None
    text = report(median, ratio_of)
    assert "throughput ours / vLLM: 1.000 (target >= 1.0: met)" in text
    assert json.dumps(ratio_of)  # goes into results.json as it is
