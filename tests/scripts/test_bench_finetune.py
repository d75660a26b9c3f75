"""The fine-tuning benchmarks' bookkeeping: rates, label conventions, medians, ratios, the table;
and that the GPU script's loss paths agree with our trainer's and it runs on a CPU (--tiny)."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scripts import bench_finetune as bench
from scripts import bench_finetune_gpu as gpu


def test_rates_count_only_the_steps_after_warmup() -> None:
    # Step ends at 1, 3, 4, 6 s; warm-up 1 step: 3 steps in 5 s.
    figures = bench.rates([1.0, 3.0, 4.0, 6.0], [100, 80, 80, 90], [120, 100, 100, 100], warmup=1)
    assert figures["timed_steps"] == 3
    assert figures["seconds"] == 5.0
    assert figures["useful_tokens"] == 250
    assert figures["useful_tok_s"] == 50.0
    assert figures["tok_s_incl_padding"] == 60.0
    assert figures["padding_fraction"] == pytest.approx(50 / 300)
    assert figures["s_per_step"] == pytest.approx(5 / 3)


@pytest.mark.parametrize(("steps", "warmup"), [(2, 2), (3, 0)])
def test_rates_refuse_runs_without_timed_steps(steps: int, warmup: int) -> None:
    with pytest.raises(ValueError, match="need more than"):
        bench.rates([1.0] * steps, [1] * steps, [1] * steps, warmup)


def test_step_meter_summary() -> None:
    meter = bench.StepMeter(warmup=1)  # no start(): it would reset this process's peak RSS
    for useful, loss in [(10, 3.0), (20, 2.5), (30, 2.0)]:
        meter.batch(useful, useful + 5, rows=2, loss=loss)
        meter.end_step()
    summary = meter.summary()
    assert (summary["steps"], summary["timed_steps"], summary["useful_tokens"]) == (3, 2, 50)
    assert (summary["first_loss"], summary["last_loss"]) == (3.0, 2.0)
    assert summary["rows_per_step"] == 2
    assert summary["process_peak_rss_mib"] > 0


def test_trl_labels_mark_the_same_tokens_as_our_targets() -> None:
    ids = [11, 12, 13, 14, 15]
    learn = [False, False, True, True, False]
    # Ours: the target at t is the next token when that token is learned.
    targets = [ids[t + 1] if learn[t + 1] else bench.IGNORE for t in range(4)] + [bench.IGNORE]
    labels = bench.trl_labels(targets)
    assert labels == [ids[t] if learn[t] else bench.IGNORE for t in range(5)]
    assert labels == [-100, -100, 13, 14, -100]


def test_count_rows_padded_and_packed() -> None:
    pad = 0
    padded = torch.tensor([[5, 6, 0], [7, 8, 9]])
    assert bench.count_rows(padded, None, pad) == 2
    packed = torch.tensor([[5, 6, 7, 8, 0, 0]])
    positions = torch.tensor([[0, 1, 0, 1, 0, 1]])  # two rows, then padding in its own block
    assert bench.count_rows(packed, positions, pad) == 2


def test_parse_result_takes_the_last_result_line() -> None:
    text = (
        "warning\n" + bench.RESULT_PREFIX + '{"a": 1}\nnoise\n' + bench.RESULT_PREFIX + '{"a": 2}\n'
    )
    assert bench.parse_result(text) == {"a": 2}
    with pytest.raises(ValueError, match="no result line"):
        bench.parse_result("nothing here")


def _run(system: str, packing: bool, speed: float, rss: float, padding: float = 0.2) -> dict:
    return {
        "system": bench.system_label(system, packing),
        "useful_tok_s": speed,
        "loop_peak_rss_mib": rss,
        "padding_fraction": padding,
        "trainable_params": 1000,
        "first_loss": 7.0,
        "last_loss": 5.0,
        "repeat": 0,
    }


def test_median_rows_keep_order_spread_and_repeats() -> None:
    runs = [
        _run("ours", False, 100, 900),
        _run("trl", False, 80, 1000),
        _run("ours", False, 120, 950),
        _run("trl", False, 90, 1000),
        _run("ours", False, 110, 1000),
    ]
    rows = bench.median_rows(runs)
    assert [r["system"] for r in rows] == ["ours (padded)", "TRL SFTTrainer (padded)"]
    assert rows[0]["useful_tok_s"] == 110
    assert (rows[0]["useful_tok_s_min"], rows[0]["useful_tok_s_max"]) == (100, 120)
    assert rows[0]["runs"] == 3
    assert rows[1]["useful_tok_s"] == 85
    assert "repeat" not in rows[0]


def test_ratios_and_their_text() -> None:
    rows = bench.median_rows(
        [
            _run("ours", False, 100, 900),
            _run("trl", False, 100, 1000, padding=0.2),
            _run("ours", True, 150, 900),
            _run("trl", True, 75, 1200),
        ]
    )
    verdict = bench.ratios(rows)
    assert verdict["speed padded vs TRL padded"] == 1.0
    assert verdict["speed packed vs TRL padded"] == 1.5
    assert verdict["speed packed vs TRL packed"] == 2.0
    assert verdict["memory packed vs TRL packed"] == 0.75
    assert verdict[bench.CEILING] == pytest.approx(1.25)
    text = bench.ratios_text(verdict)
    assert "speed padded vs TRL padded     1.00x  target >= 1.0x  met" in text
    assert "speed packed vs TRL padded     1.50x  target >= 2.0x  MISSED" in text
    assert "packing ceiling vs TRL padded: 1.25x" in text


def test_ratios_with_a_missing_run() -> None:
    verdict = bench.ratios(bench.median_rows([_run("ours", False, 100, 900)]))
    assert verdict["speed padded vs TRL padded"] is None
    assert "n/a" in bench.ratios_text(verdict)


def test_markdown_table_and_result_files(tmp_path: Path) -> None:
    rows = bench.median_rows([_run("ours", True, 1234.4, 900.0)])
    table = bench.markdown_table(rows).splitlines()
    assert table[0].startswith("| system | useful tok/s | tok/s incl. pad |")
    assert table[2].startswith("| ours (packed) | 1,234 | – | 20% |")
    bench.write_results(tmp_path, rows, bench.ratios(rows), {"repeats": 1})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"][0]["system"] == "ours (packed)"
    assert (tmp_path / "results.md").read_text().startswith("| system |")


# --- the GPU script, on a CPU ---------------------------------------------------------------


@pytest.fixture
def one_thread() -> Iterator[None]:
    """A toy model gains nothing from threads, and loses much on a busy CPU (threads wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_gpu_script_loss_paths_agree_with_our_trainer() -> None:
    from finetune.batching import Batch
    from finetune.trainer import batch_loss

    model = gpu.build_model(gpu.TINY, torch.device("cpu"), seed=0)
    batch = gpu.make_batches(gpu.Workload(rows=2, seq_len=16, steps=1), 512, torch.device("cpu"))[0]
    ours, count = batch_loss(model, Batch(batch.input_ids, batch.position_ids, batch.targets, None))
    assert count == 2 * 8  # the second half of each row: tokens 8..15, predicted at 7..14
    assert gpu.target_only_loss(model, batch).item() == pytest.approx(ours.item() / count)
    assert gpu.baseline_loss(model, batch).item() == pytest.approx(ours.item() / count, rel=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_gpu_script_runs_tiny_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    result = gpu.main(["--tiny", "--device", "cpu", "--steps", "3"])
    assert set(result["variants"]) == {"baseline", "ours"}
    base, ours = result["variants"]["baseline"], result["variants"]["ours"]
    assert ours["first_loss"] == pytest.approx(base["first_loss"], rel=1e-5)
    assert min(ours["tok_s"], base["tok_s"]) > 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == result
