"""The accuracy report's scoring and its reading of eval rows (fast), and a `--full` run's report,
which takes one engine for the trained model and one for the base."""

from pathlib import Path

from finetune.accuracy import eval_cases, is_right, is_right_answer
from finetune.settings import TrainSettings
from finetune.trainer import train
from tests.finetune.conftest import chat, write_jsonl


def test_answers_match_exactly_or_as_equal_json() -> None:
    assert is_right(" Blue. \n", "Blue.")
    assert not is_right("Blue", "Blue.")
    assert is_right('{"b": [1, 2], "a": "x"}', '{"a":"x","b":[1,2]}')
    assert not is_right('{"a": "y"}', '{"a": "x"}')
    assert not is_right("{broken", '{"a": "x"}')
    assert not is_right("1.0", "1")  # only objects and arrays compare as JSON


def test_each_row_is_asked_up_to_its_last_answer(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello.", "weight": 0},
                {"role": "user", "content": "Colour of snow?"},
                {"role": "assistant", "content": "White."},
            ]
        },
        {"prompt": "Say yes.", "completion": "yes"},
    ]
    first, second = eval_cases(write_jsonl(tmp_path / "eval.jsonl", rows))
    assert first.answer == "White."
    assert [m["content"] for m in first.messages] == [
        "Be brief.",
        "Hi",
        "Hello.",
        "Colour of snow?",
    ]
    assert "weight" not in first.messages[2]
    assert (second.messages, second.answer) == ([{"role": "user", "content": "Say yes."}], "yes")


def test_a_tool_call_answer_is_right_when_the_served_call_is(tmp_path: Path) -> None:
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": parameters}}]
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    row = {
        "tools": tools,
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
        ],
    }
    (case,) = eval_cases(write_jsonl(tmp_path / "eval.jsonl", [row]))
    assert case.tools == tools
    assert case.calls == [("get_weather", {"city": "Oslo"})]
    assert "get_weather" in case.expected_text
    assert is_right_answer(("", [("get_weather", {"city": "Oslo"})]), case)
    assert not is_right_answer(("", [("get_weather", {"city": "Bergen"})]), case)
    assert not is_right_answer(('{"city": "Oslo"}', []), case)


def test_a_full_run_is_measured_against_its_base(tiny_base: Path, tmp_path: Path) -> None:
    # Two rows learned by heart: the trained model answers both, the random base neither.
    rows = [chat("say red", "red."), chat("say sun", "sun.")]
    settings = TrainSettings(
        base=str(tiny_base),
        data=write_jsonl(tmp_path / "train.jsonl", rows * 16),
        eval=write_jsonl(tmp_path / "eval.jsonl", rows),
        out=tmp_path / "model",
        full=True,
        lr=1e-2,
        # 300 steps: in 75 (auto's pick) this 64-wide model answers "red." to both prompts.
        epochs=100,
        progress=False,
    )
    report = train(settings).eval_accuracy
    assert report is not None
    assert (report.rows, report.tuned, report.base) == (2, 1.0, 0.0)
    assert report.engine.startswith("vllm ")
