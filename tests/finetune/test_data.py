"""Reading and checking rows; the prompt is the model's own chat template; loss on replies only."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from finetune.data import IGNORE, load_dataset, tokenize_chat
from server.engine.vllm_engine import render_chat_template
from tests.finetune.conftest import chat, write_jsonl


@pytest.fixture(scope="module")
def tokenizer(tiny_base: Path):
    return AutoTokenizer.from_pretrained(tiny_base)


BAD_ROWS = [
    ("{not json", "invalid_json", "not valid JSON"),
    ("[1, 2]", "invalid_row", "must be an object"),
    ({"text": "hi"}, "invalid_row", "has 'text'"),
    ({"messages": []}, "invalid_messages", "non-empty list"),
    (
        {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        "unrecognized_role",
        "'bot'",
    ),
    (chat("hi", ""), "missing_content", "messages[1].content"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "example_missing_assistant_message", ""),
    (chat("hi", "yo", weight=2), "invalid_weight", "messages[1].weight 2"),
    (chat("hi", "yo", refusal=""), "unrecognized_key", "refusal"),
    ({"prompt": "hi", "completion": 3}, "missing_content", "'completion'"),
    (chat("hi", "yo", weight=0), "no_trainable_tokens", "weight 0"),
    (chat("hi " * 400, "yo"), "too_many_tokens", "; the base model's limit is 256"),
]


@pytest.mark.parametrize(("row", "code", "detail"), BAD_ROWS)
def test_each_problem_has_a_code_and_names_the_value(
    tmp_path: Path, tokenizer, row, code: str, detail: str
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat("fine", "ok"), row])
    dataset = load_dataset(path, tokenizer, max_seq_len=128, context_len=256)
    assert [(p.row, p.code) for p in dataset.problems] == [(2, code)]
    assert detail in dataset.problems[0].message
    assert len(dataset.examples) == 1
    assert dataset.invalid_rows == [2]


def test_totals_count_tokens_longest_and_truncated_rows(tmp_path: Path, tokenizer) -> None:
    rows = [chat("hi", "yo"), chat("hi", "yo " * 50), {"prompt": "a b", "completion": "c"}]
    dataset = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, 40, 256)
    lengths = [len(tokenize_chat(0, r["messages"], tokenizer).input_ids) for r in rows[:2]]
    assert dataset.num_rows == 3
    assert dataset.longest == lengths[1] > 40
    assert dataset.num_truncated == 1
    assert max(len(e.input_ids) for e in dataset.examples) == 40
    assert dataset.num_tokens == sum(lengths) + len(dataset.examples[2].input_ids)
    assert not dataset.problems


def test_a_row_whose_reply_is_cut_off_entirely_is_reported(tmp_path: Path, tokenizer) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [chat("hi " * 50, "yo")])
    dataset = load_dataset(path, tokenizer, max_seq_len=40, context_len=256)
    assert [(p.code, p.message) for p in dataset.problems] == [
        ("no_trainable_tokens", "no assistant token within max_seq_len (40)")
    ]


def test_targets_are_the_reply_and_its_end_of_turn_only(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "colour?"},
        {"role": "assistant", "content": "blue, no: green", "weight": 0},
        {"role": "user", "content": "sure?"},
        {"role": "assistant", "content": "green 🦘"},
    ]
    example = tokenize_chat(1, messages, tokenizer)
    learned = [t for t in example.targets if t != IGNORE]
    assert tokenizer.decode(learned) == "green 🦘<|im_end|>"
    # The prompt part is byte for byte what the server renders for the same conversation.
    prompt = render_chat_template(tokenizer, messages[:-1])
    first = example.targets.index(learned[0])
    assert tokenizer.decode(example.input_ids[: first + 1]) == prompt


def test_prompt_completion_rows_are_one_user_and_one_assistant_turn(tokenizer) -> None:
    via_chat = tokenize_chat(1, chat("2+2", "4")["messages"], tokenizer)
    from finetune.data import parse_row

    messages, problems = parse_row(1, '{"prompt": "2+2", "completion": "4"}')
    assert not problems
    assert messages is not None
    assert tokenize_chat(1, messages, tokenizer) == via_chat
