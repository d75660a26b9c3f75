"""`python -m finetune`: exit codes, reports, flags and TOML recipes."""

import subprocess
import sys
from pathlib import Path

from tests.finetune.conftest import chat, echo_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def finetune(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finetune", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_validate_reports_every_problem_and_fails(tiny_base: Path, tmp_path: Path) -> None:
    rows = [chat("hi", "yo"), "{", {"messages": [{"role": "bot", "content": "x"}]}]
    done = finetune("validate", "--base", tiny_base, "--data", write_jsonl(tmp_path / "d", rows))
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[:3] == [
        "row 2: invalid_json: not valid JSON: Expecting property name enclosed in double quotes",
        "row 3: unrecognized_role: messages[0].role 'bot' is not one of "
        "system, user, assistant, tool",
        "row 3: example_missing_assistant_message: no assistant message",
    ]
    assert "3 rows, 2 invalid" in done.stdout


def test_validate_passes_clean_data(tiny_base: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", echo_rows(5))
    done = finetune("validate", "--base", tiny_base, "--data", path, "--max-seq-len", "16")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 rows, 0 invalid" in done.stdout
    # What train would pick with every setting on auto, and why.
    assert "train would use (LoRA, every setting on auto):" in done.stdout
    assert "at least 200 steps" in done.stdout
    assert "LoRA: 0.0002 x 4096/64" in done.stdout


def test_bad_settings_exit_2_naming_setting_and_value(tiny_base: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", echo_rows(5))
    done = finetune(
        "train", "--base", tiny_base, "--data", path, "--out", tmp_path / "o", "--lr", "-1"
    )
    assert done.returncode == 2
    assert "Setting 'lr' has value '-1'" in done.stderr
    assert finetune("fly").returncode == 2


def test_train_from_a_toml_recipe_with_flags_on_top(tiny_base: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'base = "{tiny_base}"\nrank = 8\ntarget_modules = ["q_proj", "v_proj"]\n'
        "max_steps = 2\nbatch_tokens = 128\nprogress = false\n"
    )
    data = write_jsonl(tmp_path / "d.jsonl", echo_rows(10))
    out = tmp_path / "adapter"
    done = finetune(
        "train", "--config", recipe, "--data", data, "--out", out, "--target-modules", "o_proj"
    )
    assert done.returncode == 0, done.stderr
    assert "Serve it with --enable-lora --max-lora-rank 8" in done.stdout
    assert '"o_proj"' in (out / "adapter_config.json").read_text()
    assert '"q_proj"' not in (out / "adapter_config.json").read_text()
