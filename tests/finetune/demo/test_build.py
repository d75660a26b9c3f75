"""The demo model is built from nothing (tokenizer, template, weights trained) and knows things."""

from pathlib import Path

import openai
import pytest
from transformers import AutoConfig, AutoTokenizer

from finetune.demo import skills
from finetune.demo.build import DEMO_MODEL_NAME, DEMO_RECIPE, demo_model_dir, ensure_demo_model
from server.contract import read_manifest
from server.engine import chat_format
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
    assert chat_format.detect_tool_format(tok) == "hermes"


def test_the_template_renders_tools_hermes_style(tiny_base: Path) -> None:
    """Tools listed in a system turn of their own, calls in `<tool_call>` tags, results as
    `tool` turns; without tools, plain ChatML."""
    tok = AutoTokenizer.from_pretrained(tiny_base)
    case = skills.WeatherCase("Weather in Lyon?", "Lyon", "Sunny, 21 C")
    tools = [skills.WEATHER_TOOL]
    text = chat_format.render(tok, case.messages(), tools, "hermes", add_generation_prompt=False)
    assert text == (
        "<|begin_of_text|><|im_start|>system\n<tools>\n"
        '{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": '
        '{"type": "string"}}, "required": ["city"]}}\n'
        "</tools>\nCall tools in <tool_call> tags.<|im_end|>\n"
        "<|im_start|>user\nWeather in Lyon?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>tool\nSunny, 21 C<|im_end|>\n"
        "<|im_start|>assistant\nThe weather in Lyon: Sunny, 21 C.<|im_end|>\n"
    )
    assert case.call in text
    with_system = [{"role": "system", "content": "Be brief."}, *case.messages()[:1]]
    assert chat_format.render(tok, with_system, tools, "hermes").startswith(
        "<|begin_of_text|><|im_start|>system\nBe brief.\n<tools>\n"
    )
    # A call is one token to decide on: the tags are tokens of their own.
    assert len(tok.encode("<tool_call>", add_special_tokens=False)) == 1
    assert len(tok.encode("</tool_call>", add_special_tokens=False)) == 1
    # The same name is the same tokens after a space and after a quote: the call copies them.
    after_space = tok.encode(" Nairobi", add_special_tokens=False)
    assert after_space[1:] == tok.encode('"Nairobi', add_special_tokens=False)[1:]


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


def test_the_demo_model_uses_its_weather_tool(demo_model: Path) -> None:
    """Greedy, in transformers, on held-out questions: real cities it never saw (the calls, then
    the answers repeating the tool's report), and the other skills with and without the tool."""
    scores = skills.score(demo_model)
    for right, asked in vars(scores).values():
        assert right >= 0.9 * asked, scores.summary()


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
