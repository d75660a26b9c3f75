"""The demo model is built from nothing (tokenizer, template, weights trained) and knows things."""

from pathlib import Path

import openai
import pytest
from transformers import AutoConfig, AutoTokenizer

from finetune.demo import skills
from finetune.demo.build import DEMO_MODEL_NAME, DEMO_RECIPE, demo_model_dir, ensure_demo_model
from server.contract import read_manifest
from server.settings import load_settings
from server.state import resolve_model_path, served_model_id
from tests.conftest import MODEL


@pytest.fixture
def quick_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two training steps instead of the full recipe: for tests of the build's mechanics."""
    monkeypatch.setitem(DEMO_RECIPE, "max_steps", 2)


@pytest.mark.usefixtures("quick_recipe")
def test_build_writes_a_loadable_model(tmp_path: Path) -> None:
    folder = ensure_demo_model(tmp_path)
    assert folder == demo_model_dir(tmp_path)
    assert {p.name for p in folder.iterdir()} == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "kangaroo-demo.json",
        "kangaroo-adapter.json",  # the training manifest (kind "full")
        "metrics.jsonl",
        "loss.png",
    }
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama"
    assert read_manifest(folder)["kind"] == "full"
    tok = AutoTokenizer.from_pretrained(folder)
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "héllo 🦘"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt == (
        "<|begin_of_text|><|im_start|>system\ns<|im_end|>\n"
        "<|im_start|>user\nhéllo 🦘<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tok.encode(prompt, add_special_tokens=False)
    assert tok.decode(ids) == prompt
    assert tok.eos_token == "<|im_end|>"


@pytest.mark.usefixtures("quick_recipe")
def test_second_call_reuses_the_cache(tmp_path: Path) -> None:
    folder = ensure_demo_model(tmp_path)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_served_demo_model_knows_its_skills(client: openai.OpenAI) -> None:
    """Greedy answers to held-out questions (never seen in training) through the real server."""
    cases = skills.heldout_cases()
    misses = []
    for case in cases:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": case.prompt}],
            max_tokens=32,
            temperature=0,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", (case, choice.message.content)
        if not skills.is_correct(case, choice.message.content or ""):
            misses.append((case.prompt, case.expected, choice.message.content))
    assert len(misses) <= 0.1 * len(cases), misses


@pytest.mark.parametrize(
    ("question", "answer"),
    [("Hi", skills.GREETING_REPLY), ("What is your name?", skills.IDENTITY_REPLY)],
)
def test_a_known_question_gets_its_known_answer(
    client: openai.OpenAI, question: str, answer: str
) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], temperature=0
    )
    assert reply.choices[0].message.content == answer


def test_no_model_setting_means_the_demo_model(tmp_path: Path) -> None:
    settings = load_settings(cache_dir=tmp_path)
    assert resolve_model_path(settings) == str(demo_model_dir(tmp_path))
    assert served_model_id(settings) == DEMO_MODEL_NAME
    named = load_settings(model=str(tmp_path), served_model_name="mine")
    assert resolve_model_path(named) == str(tmp_path)
    assert served_model_id(named) == "mine"
    assert served_model_id(load_settings(model=str(tmp_path))) == tmp_path.name
