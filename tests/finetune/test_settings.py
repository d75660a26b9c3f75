"""The train settings: the recipe in configs/ lists every default; values are checked."""

import tomllib
from pathlib import Path

import pytest

from finetune.settings import TrainSettings
from server.contract import SettingsError, parse_settings
from tests.finetune.conftest import echo_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "finetune-lora.toml"


def test_the_recipe_holds_every_default(tiny_base: Path, tmp_path: Path) -> None:
    recipe = tomllib.loads(RECIPE.read_text())
    required = {"base", "data", "out", "config"}
    optional = {"eval", "max_steps", "warmup_steps"}  # commented out in the file: no default
    assert set(recipe) == set(TrainSettings.model_fields) - required - optional
    for key, value in recipe.items():
        assert TrainSettings.model_fields[key].get_default(call_default_factory=True) == value, key
    data = write_jsonl(tmp_path / "d.jsonl", echo_rows(2))
    argv = ["--config", str(RECIPE), "--base", str(tiny_base), "--data", str(data)]
    assert parse_settings(TrainSettings, [*argv, "--out", str(tmp_path / "o")]).rank == 16


def test_values_are_checked_by_name(tiny_base: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", echo_rows(2))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    base = ["--base", str(tiny_base), "--data", str(data)]
    cases = [
        ([*base, "--out", str(tmp_path / "taken")], "is not empty: pick a new folder"),
        (["--base", str(tmp_path), "--data", str(data), "--out", "o"], "not a model folder"),
        (["--base", "demo", "--data", str(tmp_path / "nope"), "--out", "o"], "no such file"),
        ([*base, "--out", "o", "--dropout", "1.5"], "Setting 'dropout' has value '1.5'"),
    ]
    for argv, message in cases:
        with pytest.raises(SettingsError, match=message):
            parse_settings(TrainSettings, argv)
