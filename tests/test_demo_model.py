"""The demo model is built from nothing: tokenizer, chat template, config and weights."""

from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from server.demo_model import DEMO_MODEL_NAME, demo_model_dir, ensure_demo_model
from server.settings import load_settings
from server.state import resolve_model_path, served_model_id


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
    }
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "llama"
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


def test_second_call_reuses_the_cache(tmp_path: Path) -> None:
    folder = ensure_demo_model(tmp_path)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_no_model_setting_means_the_demo_model(tmp_path: Path) -> None:
    settings = load_settings(cache_dir=tmp_path)
    assert resolve_model_path(settings) == str(demo_model_dir(tmp_path))
    assert served_model_id(settings) == DEMO_MODEL_NAME
    named = load_settings(model=str(tmp_path), served_model_name="mine")
    assert resolve_model_path(named) == str(tmp_path)
    assert served_model_id(named) == "mine"
    assert served_model_id(load_settings(model=str(tmp_path))) == tmp_path.name
