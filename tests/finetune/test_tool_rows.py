"""Rows with tools (OpenAI's format): checked with named problems, rendered as the server renders
them, loss on the calls and the answers."""

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from finetune.data import IGNORE, load_dataset, parse_chat, tokenize_chat
from tests.finetune.conftest import chat, write_jsonl

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def tokenizer(tiny_base: Path):
    return AutoTokenizer.from_pretrained(tiny_base)


def call(name: str = "get_weather", arguments: Any = '{"city": "Lyon"}', id: str = "c1") -> dict:
    """One OpenAI tool call: arguments as a JSON string."""
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_row(
    calls: Any = None, result_id: Any = "c1", tools: Any = None, content: Any = None
) -> dict[str, Any]:
    """Question, call, result, answer: the row every bad row below breaks in one place."""
    result: dict[str, Any] = {"role": "tool", "content": "Sunny, 21 C"}
    if result_id is not None:
        result["tool_call_id"] = result_id
    return {
        "tools": [WEATHER] if tools is None else tools,
        "messages": [
            {"role": "user", "content": "What is the weather in Lyon?"},
            {"role": "assistant", "content": content, "tool_calls": calls or [call()]},
            result,
            {"role": "assistant", "content": "The weather in Lyon: Sunny, 21 C."},
        ],
    }


def with_message_keys(row: dict[str, Any], index: int, **keys: Any) -> dict[str, Any]:
    """`row` with `keys` added to its message `index`."""
    row["messages"][index].update(keys)
    return row


BAD_TOOL_ROWS = [
    (tool_row(tools={"get_weather": {}}), "invalid_tools", "'tools' must be a list"),
    (tool_row(tools=[{"type": "retrieval"}]), "invalid_tools", 'tools[0] must be {"type"'),
    (
        tool_row(tools=[{"type": "function", "function": {"parameters": {"type": "object"}}}]),
        "invalid_tools",
        "tools[0].function.name None",
    ),
    (
        tool_row(tools=[{"type": "function", "function": {"name": "get_weather"}}]),
        "invalid_tools",
        "tools[0].function.parameters None must be a JSON schema of an object",
    ),
    (tool_row(tools=[WEATHER, WEATHER]), "invalid_tools", "'get_weather' names two tools"),
    (tool_row(calls=[{"id": "c1", "name": "get_weather"}]), "invalid_tool_call", "tool_calls[0]"),
    (
        tool_row(calls=[call(arguments={"city": "Lyon"})]),
        "invalid_tool_call",
        "tool_calls[0].function.arguments {'city': 'Lyon'} must be a string",
    ),
    (tool_row(calls=[call(arguments='"Lyon"')]), "invalid_tool_call", "encoding a JSON object"),
    (tool_row(calls=[call(arguments="{city: Lyon}")]), "invalid_tool_call", "'{city: Lyon}'"),
    (chat("hi", "yo", tool_calls=[]), "invalid_tool_call", "non-empty list"),
    (
        with_message_keys(tool_row(), 0, tool_calls=[call()]),
        "invalid_tool_call",
        "messages[0].tool_calls: only assistant messages",
    ),
    (
        tool_row(calls=[call(name="get_time")]),
        "unknown_tool",
        "'get_time' is not one of the row's tools: get_weather",
    ),
    (tool_row(tools=[]), "unknown_tool", "row's tools: none"),
    (tool_row(result_id=None), "missing_tool_call_id", "messages[2].tool_call_id"),
    (tool_row(result_id="c9"), "unknown_tool_call_id", "messages[2].tool_call_id 'c9'"),
    (tool_row(content=7), "missing_content", "messages[1].content must be a string or null"),
]


@pytest.mark.parametrize(("row", "code", "detail"), BAD_TOOL_ROWS)
def test_each_tool_problem_has_a_code_and_names_the_value(
    tmp_path: Path, tokenizer, row, code: str, detail: str
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [tool_row(), row])
    dataset = load_dataset(path, tokenizer, max_seq_len=512, context_len=1024)
    assert [(p.row, p.code) for p in dataset.problems] == [(2, code)]
    assert detail in dataset.problems[0].message
    assert len(dataset.examples) == 1


@pytest.mark.parametrize("content", [None, ""])
def test_a_message_that_calls_a_tool_may_say_nothing_else(content: str | None) -> None:
    chat_row, problems = parse_chat(1, json.dumps(tool_row(content=content)))
    assert not problems
    assert chat_row is not None
    assert chat_row.tools == [WEATHER]


def test_tools_reach_the_template_as_the_server_passes_them() -> None:
    """Name, description, parameters in that order; `strict` dropped, as the API layer does."""
    function = {
        "parameters": WEATHER["function"]["parameters"],
        "strict": True,
        "name": "get_weather",
    }
    row = tool_row(tools=[{"type": "function", "function": function}])
    chat_row, problems = parse_chat(1, json.dumps(row))
    assert not problems
    assert chat_row is not None
    assert chat_row.tools is not None
    assert list(chat_row.tools[0]["function"]) == ["name", "parameters"]


def test_targets_are_the_call_and_the_answer(tokenizer) -> None:
    row = tool_row()
    example = tokenize_chat(1, row["messages"], tokenizer, row["tools"])
    learned = [i for i, t in enumerate(example.targets) if t != IGNORE]
    runs = _runs(learned)
    texts = [tokenizer.decode([example.targets[i] for i in run]) for run in runs]
    assert texts == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call>'
        "<|im_end|>",
        "The weather in Lyon: Sunny, 21 C.<|im_end|>",
    ]


def test_the_prompt_of_a_tool_row_is_what_the_server_renders(tokenizer) -> None:
    from server.engine.vllm_engine import render_chat_template  # imports vLLM: slow

    row = tool_row()
    example = tokenize_chat(1, row["messages"], tokenizer, row["tools"], "hermes")
    learned = [i for i, t in enumerate(example.targets) if t != IGNORE]
    for run, upto in zip(_runs(learned), (1, 3), strict=True):
        prompt = render_chat_template(tokenizer, row["messages"][:upto], row["tools"], "hermes")
        assert tokenizer.decode(example.input_ids[: run[0] + 1]) == prompt


def test_the_demo_template_is_served_as_hermes(tokenizer) -> None:
    from server.engine.chat_format import detect_tool_format

    assert detect_tool_format(tokenizer) == "hermes"


def test_a_template_that_ignores_tools_learns_the_generic_format(tiny_base: Path) -> None:
    """Tools in the system turn, the call as text, the result as a user turn: as served."""
    from server.engine.vllm_engine import render_chat_template  # imports vLLM: slow

    plain = AutoTokenizer.from_pretrained(tiny_base)
    plain.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    row = tool_row()
    example = tokenize_chat(1, row["messages"], plain, row["tools"])
    learned = [i for i, t in enumerate(example.targets) if t != IGNORE]
    first_run = _runs(learned)[0]
    assert plain.decode([example.targets[i] for i in first_run]) == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call>'
        "<|im_end|>"
    )
    prompt = render_chat_template(plain, row["messages"][:1], row["tools"], "generic")
    assert plain.decode(example.input_ids[: first_run[0] + 1]) == prompt


def test_weight_zero_keeps_a_call_out_of_the_loss(tokenizer) -> None:
    row = with_message_keys(tool_row(), 1, weight=0)
    example = tokenize_chat(1, row["messages"], tokenizer, row["tools"])
    learned = [t for t in example.targets if t != IGNORE]
    assert tokenizer.decode(learned) == "The weather in Lyon: Sunny, 21 C.<|im_end|>"


def _runs(indices: list[int]) -> list[list[int]]:
    """Consecutive runs of `indices`."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
