"""`auto` hyperparameters: the rules, what explicit settings do to them, and the no-progress
warning (fast: no training)."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from finetune import auto
from finetune.data import load_dataset
from finetune.report import no_gain_warning, no_progress_warning
from finetune.settings import TrainSettings
from finetune.trainer import plan_run
from server.contract import SettingsError, parse_settings
from tests.finetune.conftest import echo_rows, write_jsonl


def test_a_small_dataset_gets_more_epochs_a_large_one_fewer() -> None:
    small = auto.DataShape(rows=100, tokens=5_000, longest=80)
    tokens, _ = auto.batch_tokens(small, pack_len=256)
    assert tokens == 256  # the smallest step: one packed sequence
    epochs, why = auto.epochs(small.rows, steps_per_epoch=20)
    assert epochs == 10  # 200 steps
    assert "at least 200 steps" in why

    large = auto.DataShape(rows=100_000, tokens=5_000_000, longest=900)
    tokens, why = auto.batch_tokens(large, pack_len=900)
    assert tokens == 8100  # 200 rows wanted (~10,000 tokens), capped at 8,192 in whole sequences
    assert "capped" in why
    epochs, why = auto.epochs(large.rows, steps_per_epoch=620)
    assert epochs == 1
    assert "25,000 rows" in why

    assert auto.epochs(2_000, steps_per_epoch=400)[0] == 3


def test_the_learning_rate_follows_the_width_and_the_method() -> None:
    assert auto.learning_rate(4096, full=False)[0] == pytest.approx(2e-4)
    assert auto.learning_rate(8192, full=False)[0] == pytest.approx(1e-4)  # QLoRA's 65B rate
    assert auto.learning_rate(256, full=False)[0] == pytest.approx(3.2e-3)
    assert auto.learning_rate(4096, full=True)[0] == pytest.approx(2e-5)


def test_padded_batches_hold_at_least_the_longest_row() -> None:
    shape = auto.DataShape(rows=300, tokens=3_000, longest=700)
    assert auto.batch_tokens(shape, pack_len=None)[0] == 700


def test_warmup_is_a_fraction_of_the_run_and_never_longer() -> None:
    assert auto.warmup_steps(200, None, 0.05) == (10, "0.05 of the run")
    assert auto.warmup_steps(3, 10, 0.05)[0] == 3
    assert auto.warmup_steps(300, 10, 0.05) == (10, "set")


def _plan(tiny_base: Path, tmp_path: Path, rows: int, **settings: object) -> auto.Plan:
    data = write_jsonl(tmp_path / "d.jsonl", echo_rows(rows))
    values = {"base": str(tiny_base), "data": data, "out": tmp_path / "o", **settings}
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    dataset = load_dataset(data, tokenizer, 1024, 2048)
    return plan_run(TrainSettings(**values), dataset, 1024, 0, hidden_size=64)


def test_explicit_settings_win_over_auto(tiny_base: Path, tmp_path: Path) -> None:
    chosen = _plan(tiny_base, tmp_path, 300)
    assert chosen.chosen == ("batch_tokens", "epochs", "lr")
    assert chosen.total_steps >= auto.MIN_STEPS
    assert chosen.lr == pytest.approx(2e-4 * 4096 / 64)

    given = _plan(tiny_base, tmp_path, 300, epochs=2, lr=1e-3, batch_tokens=512, warmup_steps=4)
    assert given.chosen == ()
    assert (given.epochs, given.lr, given.batch_tokens, given.warmup_steps) == (2, 1e-3, 512, 4)
    assert all(line.endswith("set") for line in given.lines() if "epochs" in line or "lr" in line)
    capped = _plan(tiny_base, tmp_path, 300, epochs=1, max_steps=3)
    assert capped.total_steps == 3
    assert capped.reasons["steps"] == "max_steps"


def test_auto_and_numbers_parse_from_flags_env_and_toml(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", echo_rows(2))
    argv = ["--base", str(tiny_base), "--data", str(data), "--out", str(tmp_path / "o")]
    parsed = parse_settings(TrainSettings, [*argv, "--epochs", "2.5", "--lr", "auto"])
    assert (parsed.epochs, parsed.lr, parsed.batch_tokens) == (2.5, "auto", "auto")
    monkeypatch.setenv("KANGAROO_FT_BATCH_TOKENS", "1024")
    assert parse_settings(TrainSettings, argv).batch_tokens == 1024
    recipe = tmp_path / "r.toml"
    recipe.write_text('lr = 0.001\nepochs = "auto"\n')
    from_file = parse_settings(TrainSettings, [*argv, "--config", str(recipe)])
    assert (from_file.lr, from_file.epochs) == (0.001, "auto")
    for flag, value in (("--epochs", "many"), ("--lr", "0"), ("--batch-tokens", "8")):
        with pytest.raises(SettingsError, match=f"Setting '{flag[2:].replace('-', '_')}'"):
            parse_settings(TrainSettings, [*argv, flag, value])


def _metrics(train: list[float], evals: list[float] = ()) -> list[dict]:
    rows: list[dict] = [{"step": 0, "eval_loss": evals[0]}] if evals else []
    rows += [{"step": i + 1, "train_loss": loss} for i, loss in enumerate(train)]
    if len(evals) > 1:
        rows.append({"step": len(train), "eval_loss": evals[-1]})
    return rows


def test_a_run_that_did_not_learn_says_why_and_which_flags() -> None:
    plan = auto.Plan(epochs=1, lr=2e-4, batch_tokens=4096, total_steps=3, warmup_steps=10)
    warning = no_progress_warning(_metrics([11.66, 11.62, 11.59]), plan)
    assert warning is not None
    assert "did not learn" in warning
    assert "11.7 -> 11.6" in warning
    for flag in ("--epochs", "--batch-tokens", "--warmup-steps", "--lr"):
        assert flag in warning
    plan.reasons["steps"] = "max_steps"
    assert "raise or drop --max-steps" in (no_progress_warning(_metrics([11.7] * 3), plan) or "")

    long = auto.Plan(epochs=3, lr=3.2e-3, batch_tokens=256, total_steps=300, warmup_steps=15)
    assert no_progress_warning(_metrics([11.3] * 10 + [0.8] * 290, [11.5, 0.81]), long) is None
    overfit = no_progress_warning(_metrics([11.3] * 10 + [0.1] * 290, [11.5, 11.4]), long)
    assert overfit is not None
    assert "eval loss did not" in overfit


def test_an_adapter_that_changes_no_served_answer_is_called_out() -> None:
    plan = auto.Plan(epochs=1, lr=2e-4, batch_tokens=4096, total_steps=25, warmup_steps=10)
    warning = no_gain_warning(tuned=0.0, base=0.0, plan=plan)
    assert warning is not None
    assert "0.0% of the eval rows right with it, 0.0% without" in warning
    assert "too few optimiser steps (25;" in warning
    assert no_gain_warning(tuned=0.9, base=0.0, plan=plan) is None
