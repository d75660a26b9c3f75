"""Training end to end on a tiny model: the folder contract, determinism, resume, refusals."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune import trainer
from finetune.settings import LLAMA_PROJECTIONS, TrainSettings
from finetune.trainer import InvalidDataError, train, work_dir
from server.contract import MANIFEST_NAME
from tests.finetune.conftest import echo_rows, write_jsonl


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    return {
        "data": write_jsonl(folder / "train.jsonl", echo_rows(64, seed=1)),
        "eval": write_jsonl(folder / "eval.jsonl", echo_rows(16, seed=2)),
    }


def settings(tiny_base: Path, data: dict[str, Path], out: Path, **overrides: Any) -> TrainSettings:
    values: dict[str, Any] = {
        "base": str(tiny_base),
        "data": data["data"],
        "out": out,
        "rank": 8,
        "alpha": 16,
        "lr": 5e-3,
        "batch_tokens": 256,
        "max_seq_len": 64,
        "epochs": 2,
        "eval_every": 5,
        "warmup_steps": 2,
        "progress": False,
        "eval_accuracy": False,  # vLLM's report: tests/finetune/test_learning.py
    }
    return TrainSettings(**{**values, **overrides})


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_lora_run_writes_the_adapter_folder_contract(tiny_base: Path, data, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    result = train(settings(tiny_base, data, out, eval=data["eval"]))

    assert {p.name for p in out.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        MANIFEST_NAME,
        "metrics.jsonl",
        "loss.png",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no work or partial folder left
    tensors = adapter_tensors(out)
    assert tensors
    assert all(".lora_A." in k or ".lora_B." in k for k in tensors)
    assert {k.split(".")[-3] for k in tensors} == set(LLAMA_PROJECTIONS)
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["bias"]) == (8, 16, "none")
    assert not config["use_dora"]
    assert not config["modules_to_save"]

    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["kind"] == "lora"
    assert manifest["lora"]["rank"] == 8
    assert manifest["lora"]["max_lora_rank"] == 8
    assert len(manifest["base_model"]["fingerprint"]) == 64
    assert manifest["data"]["rows"] == 64
    assert (
        manifest["data"]["sha256"]
        == __import__("hashlib").sha256(data["data"].read_bytes()).hexdigest()
    )
    assert manifest["final_eval_loss"] == pytest.approx(result.eval_loss)
    assert manifest["training"]["steps"] == result.steps
    assert set(manifest["versions"]) >= {"torch", "transformers", "peft"}

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_losses = [m["train_loss"] for m in metrics if "train_loss" in m]
    eval_steps = [m["step"] for m in metrics if "eval_loss" in m]
    assert len(train_losses) == result.steps
    assert eval_steps[-1] == result.steps
    assert eval_steps[:2] == [0, 5]  # before the first step, then every eval_every
    assert train_losses[-1] < train_losses[0]  # it learns


def test_same_seed_and_data_give_the_same_adapter(tiny_base: Path, data, tmp_path: Path) -> None:
    runs = [
        train(settings(tiny_base, data, tmp_path / name, seed=seed, dropout=0.1, max_steps=6)).out
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    ]
    a, b, c = (adapter_tensors(folder) for folder in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_auto_runs_are_deterministic_and_record_their_choices(
    tiny_base: Path, data, tmp_path: Path
) -> None:
    def run(name: str) -> Path:
        auto = {"epochs": "auto", "lr": "auto", "batch_tokens": "auto", "warmup_steps": None}
        return train(settings(tiny_base, data, tmp_path / name, **auto)).out

    a, b = run("a"), run("b")
    first, second = adapter_tensors(a), adapter_tensors(b)
    assert all(torch.equal(first[k], second[k]) for k in first)
    manifest = json.loads((a / MANIFEST_NAME).read_text())
    assert set(manifest["training"]["auto"]) == {"epochs", "lr", "batch_tokens"}
    schedule = json.loads((a / "metrics.jsonl").read_text().splitlines()[0])["schedule"]
    assert schedule["total_steps"] == manifest["training"]["steps"]
    assert schedule["peak_lr"] == manifest["training"]["lr"]


def test_resume_after_a_crash_gives_the_uninterrupted_result(
    tiny_base: Path, data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = train(settings(tiny_base, data, tmp_path / "whole", checkpoint_every=2)).out

    out = tmp_path / "resumed"
    real_step = trainer._train_step
    calls = []

    def crash_at_step_5(*args: Any) -> float:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(trainer, "_train_step", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(settings(tiny_base, data, out, checkpoint_every=2))
    monkeypatch.setattr(trainer, "_train_step", real_step)
    assert not out.exists()  # nothing that looks like an adapter
    assert (work_dir(out) / "checkpoint.pt").is_file()

    with pytest.raises(Exception, match="pass --resume"):
        train(settings(tiny_base, data, out, checkpoint_every=2))
    train(settings(tiny_base, data, out, checkpoint_every=2, resume=True))

    expected, got = adapter_tensors(whole), adapter_tensors(out)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "schedule" in metrics[0]  # written once, before step 1
    assert [m["step"] for m in metrics] == list(range(len(metrics)))  # no step twice
    assert not work_dir(out).exists()


def test_invalid_rows_stop_the_run_unless_skipped(tiny_base: Path, tmp_path: Path) -> None:
    rows = [*echo_rows(20), "{oops", {"messages": [{"role": "user", "content": "hi"}]}]
    data = {"data": write_jsonl(tmp_path / "bad.jsonl", rows)}
    with pytest.raises(InvalidDataError) as caught:
        train(settings(tiny_base, data, tmp_path / "a", max_steps=1))
    message = str(caught.value)
    assert "row 21: invalid_json" in message
    assert "row 22: example_missing_assistant_message" in message
    assert "--skip-invalid" in message
    assert not (tmp_path / "a").exists()

    out = train(settings(tiny_base, data, tmp_path / "b", max_steps=1, skip_invalid=True)).out
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert (manifest["data"]["rows_used"], manifest["data"]["rows_skipped"]) == (20, 2)


def test_a_crash_while_exporting_leaves_no_folder(
    tiny_base: Path, data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(trainer.adapter, "write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        train(settings(tiny_base, data, tmp_path / "out", max_steps=2))
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_full_mode_writes_a_model_that_loads(tiny_base: Path, data, tmp_path: Path) -> None:
    out = train(settings(tiny_base, data, tmp_path / "model", full=True, max_steps=3)).out
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_base).chat_template
    changed = [
        name
        for (name, p), (_, q) in zip(model.named_parameters(), base.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert len(changed) == len(list(base.parameters()))  # every weight trained
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert (manifest["kind"], manifest["lora"]) == ("full", None)


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_compiled_training_matches_eager(
    tiny_base: Path, data, tmp_path: Path, packing: bool
) -> None:
    # The compiled path, run on the CPU in fp32: the same adapter as eager up to rounding, with
    # fixed shapes (packed) and with dynamic ones (padded batches of different lengths).
    fp32 = {"max_steps": 4, "precision": "fp32", "packing": packing}
    eager = train(settings(tiny_base, data, tmp_path / "eager", compile=False, **fp32)).out
    compiled = train(settings(tiny_base, data, tmp_path / "compiled", compile=True, **fp32))

    manifest = json.loads((compiled.out / MANIFEST_NAME).read_text())
    assert manifest["training"]["compiled"] is True
    reference, tensors = adapter_tensors(eager), adapter_tensors(compiled.out)
    assert tensors.keys() == reference.keys()
    for name, tensor in tensors.items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_each_precision_is_deterministic(
    tiny_base: Path, data, tmp_path: Path, precision: str
) -> None:
    runs = [
        train(settings(tiny_base, data, tmp_path / str(i), precision=precision, max_steps=6)).out
        for i in range(2)
    ]
    first, second = (adapter_tensors(folder) for folder in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)  # same seed, same bits
    assert json.loads((runs[0] / MANIFEST_NAME).read_text())["training"]["precision"] == precision


def test_bf16_learns_what_fp32_learns(tiny_base: Path, data, tmp_path: Path) -> None:
    bf16 = train(settings(tiny_base, data, tmp_path / "bf16", precision="bf16"))
    fp32 = train(settings(tiny_base, data, tmp_path / "fp32", precision="fp32"))
    # The matmuls round differently, the training does not: final losses within 2 %.
    assert bf16.train_loss == pytest.approx(fp32.train_loss, rel=0.02)
