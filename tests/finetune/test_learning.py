"""Fine-tuning with no hyperparameter flags learns, and says how much in the real vLLM engine.

A behaviour the demo model does not have (one fixed reply to any request) is taught from 200
and from 2,000 rows with every setting on its default; the accuracy report (the held-out rows
generated greedily in vLLM, with and without the adapter) must show it learned, and a separate
check through a running server must find the same numbers.
"""

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from finetune.accuracy import eval_cases, is_right
from finetune.demo.skills import fixed_reply_heldout, fixed_reply_rows
from finetune.push import PushSettings, push
from finetune.settings import TrainSettings
from finetune.trainer import TrainResult, train
from server.contract import MANIFEST_NAME
from tests.conftest import ADMIN_KEY, REPO, RunningServer
from tests.finetune.conftest import write_jsonl


def _train_defaults(demo_model: Path, folder: Path, rows: int) -> TrainResult:
    data = write_jsonl(folder / "train.jsonl", fixed_reply_rows(rows, seed=0))
    held_out = write_jsonl(folder / "eval.jsonl", fixed_reply_heldout())
    settings = TrainSettings(
        base=str(demo_model), data=data, eval=held_out, out=folder / "adapter", progress=False
    )
    return train(settings)


@pytest.fixture(scope="module")
def small_run(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """200 rows, every setting on its default."""
    return _train_defaults(demo_model, tmp_path_factory.mktemp("fixed-200"), 200)


def _manifest(result: TrainResult) -> dict:
    return json.loads((result.out / MANIFEST_NAME).read_text())


@pytest.mark.parametrize("rows", [200, 2000])
def test_the_defaults_learn_without_flags(
    rows: int, small_run: TrainResult, demo_model: Path, tmp_path: Path
) -> None:
    result = small_run if rows == 200 else _train_defaults(demo_model, tmp_path, rows)
    report = result.eval_accuracy
    assert report is not None, result.accuracy_error
    assert report.rows == 40
    assert report.tuned >= 0.9, report
    assert report.base == 0.0
    assert result.warning is None
    manifest = _manifest(result)
    assert manifest["eval_accuracy"] == report.as_dict()
    training = manifest["training"]
    assert set(training["auto"]) == {"epochs", "lr", "batch_tokens"}
    assert training["steps"] >= 200
    assert training["warmup_steps"] == round(0.05 * training["steps"])


def test_the_report_equals_a_separate_check_through_a_server(
    small_run: TrainResult, prod: RunningServer
) -> None:
    pushed = push(
        PushSettings(folder=small_run.out, name="fixed-reply", server=prod.url, admin_key=ADMIN_KEY)
    )
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=ADMIN_KEY, max_retries=0)
    cases = eval_cases(small_run.out.parent / "eval.jsonl")

    def share_right(model: str) -> float:
        answers = [
            client.chat.completions.create(
                model=model, messages=case.messages, temperature=0, max_tokens=64
            )
            .choices[0]
            .message.content
            for case in cases
        ]
        return sum(is_right(a or "", c.answer) for a, c in zip(answers, cases, strict=True)) / 40

    report = small_run.eval_accuracy
    assert report is not None
    assert share_right(pushed["pinned_model"]) == report.tuned
    assert share_right("kangaroo-demo") == report.base
    card = client.models.retrieve(pushed["pinned_model"]).model_dump()
    assert card["eval_accuracy"] == report.as_dict()


def test_a_run_that_learns_nothing_ends_with_a_warning(demo_model: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", fixed_reply_rows(200, seed=0))
    flags = ["--base", str(demo_model), "--data", str(data), "--out", str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-m", "finetune", "train", *flags, "--max-steps", "1", "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning: This run did not learn" in done.stderr
    assert (
        "too few optimiser steps (1; 200 or more learn): raise or drop --max-steps" in done.stderr
    )
    assert "--lr" in done.stderr
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["warnings"]
