"""Tools, tool calls and structured outputs through the HTTP layer, on the fake engine (fast):
the wire shapes clients assemble, and every bad input refused with a 400 naming the field."""

import json
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from finetune.demo import skills
from tests.fakes import FakeEngine, fake_client

WEATHER = skills.WEATHER_TOOL
ASK = [{"role": "user", "content": "What is the weather in Lyon?"}]
ARGUMENTS = '{"city": "Lyon"}'


def _calling_engine() -> FakeEngine:
    engine = FakeEngine()
    engine.tool_call = ("get_weather", ARGUMENTS)
    return engine


def _chunks(text: str) -> list[dict[str, Any]]:
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


def test_a_whole_reply_carries_the_calls_and_finishes_with_tool_calls() -> None:
    with fake_client(_calling_engine()) as client:
        body = {"model": "fake", "messages": ASK, "tools": [WEATHER]}
        reply = client.post("/v1/chat/completions", json=body).json()
    (choice,) = reply["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call == {
        "id": "call_fake",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ARGUMENTS},
    }


def test_streamed_calls_have_the_shape_every_client_assembles() -> None:
    with fake_client(_calling_engine()) as client:
        body = {"model": "fake", "messages": ASK, "tools": [WEATHER], "stream": True}
        chunks = _chunks(client.post("/v1/chat/completions", json=body).text)
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    first, *rest = [entry for entries in calls for entry in entries]
    assert first == {
        "index": 0,
        "id": "call_fake",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert rest  # the arguments come in later deltas, index and arguments only
    assert all(set(entry) == {"index", "function"} for entry in rest)
    assert all(set(entry["function"]) == {"arguments"} for entry in rest)
    assert "".join(entry["function"]["arguments"] for entry in rest) == ARGUMENTS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # The official client's own assembly gives the same call.
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    (assembled,) = state.get_final_completion().choices[0].message.tool_calls or []
    assert (assembled.function.name, assembled.function.arguments) == ("get_weather", ARGUMENTS)


def test_a_named_tool_choice_finishes_with_stop() -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    with fake_client(_calling_engine()) as client:
        body = {"model": "fake", "messages": ASK, "tools": [WEATHER], "tool_choice": choice}
        reply = client.post("/v1/chat/completions", json=body).json()
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_the_engine_checks_what_it_must_enforce() -> None:
    engine = _calling_engine()
    with fake_client(engine) as client:
        body = {"model": "fake", "messages": ASK, "tools": [WEATHER], "parallel_tool_calls": False}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
        body = {"model": "fake", "messages": ASK, "response_format": fmt}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    tools, constrained = engine.checked
    assert tools.tools is not None
    assert (tools.tools.choice, tools.tools.parallel) == ("auto", False)
    assert tools.tools.tools[0]["function"]["name"] == "get_weather"
    assert constrained.constraint is not None
    assert constrained.constraint.json_schema == {"type": "object"}


def test_raw_control_characters_never_reach_a_json_answer() -> None:
    engine = FakeEngine(script='{"note": "tab\there"}')
    with fake_client(engine) as client:
        body = {"model": "fake", "messages": ASK, "response_format": {"type": "json_object"}}
        whole = client.post("/v1/chat/completions", json=body).json()
        streamed = _chunks(client.post("/v1/chat/completions", json=body | {"stream": True}).text)
    content = whole["choices"][0]["message"]["content"]
    assert json.loads(content) == {"note": "tab\there"}
    assert "\t" not in content
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed)
    assert text == content


SCHEMA_OBJECT = {"type": "object", "properties": {"x": {"type": "string"}}}


@pytest.mark.parametrize(
    ("extra", "param", "says"),
    [
        ({"tools": [WEATHER, WEATHER]}, "tools.1.function.name", "more than one tool"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ]
            },
            "tools.0.function.parameters",
            "object",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
            "'nope'",
        ),
        ({"tool_choice": "required"}, "tool_choice", "only allowed when 'tools'"),
        ({"tool_choice": "sometimes", "tools": [WEATHER]}, "tool_choice", "sometimes"),
        (
            {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_9", "content": "Sunny"}]},
            "messages.1.tool_call_id",
            "'call_9'",
        ),
        (
            {"messages": [*ASK, {"role": "tool", "content": "Sunny"}]},
            "messages.1.tool_call_id",
            "required",
        ),
        ({"messages": [{"role": "user", "content": None}]}, "messages.0.content", "required"),
        (
            {
                "messages": [
                    *ASK,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    },
                ]
            },
            "messages.1.tool_calls.0.function.arguments",
            "not valid JSON",
        ),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format.json_schema.schema",
            "required",
        ),
        (
            {"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a+"}},
            "structured_outputs",
            "not both",
        ),
        (
            {"structured_outputs": {"regex": "a+", "choice": ["a"]}},
            "structured_outputs",
            "exactly one",
        ),
        ({"structured_outputs": {"choice": []}}, "structured_outputs.choice", "non-empty"),
        ({"guided_json": SCHEMA_OBJECT}, "guided_json", "removed from vLLM"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "r", "schema": {"not": {"type": "string"}}},
                }
            },
            "response_format.json_schema.schema",
            "'not'",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"t": {"type": "array", "uniqueItems": True}},
                            },
                        },
                    }
                ]
            },
            "tools.0.function.parameters/properties/t",
            "'uniqueItems'",
        ),
    ],
)
def test_bad_input_gets_a_400_naming_the_field(extra: dict, param: str, says: str) -> None:
    with fake_client(_calling_engine()) as client:
        body = {"model": "fake", "messages": ASK} | extra
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert says in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_refused_schema_has_its_own_code() -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": {"if": {"type": "object"}, "then": {}}},
    }
    with fake_client() as client:
        error = client.post(
            "/v1/chat/completions", json={"model": "fake", "messages": ASK, "response_format": fmt}
        ).json()["error"]
    assert error["code"] == "invalid_json_schema"


def test_completions_take_structured_outputs_too() -> None:
    engine = FakeEngine()
    with fake_client(engine) as client:
        body = {"model": "fake", "prompt": "x", "structured_outputs": {"choice": ["one", "two"]}}
        assert client.post("/v1/completions", json=body).status_code == 200
        bad = client.post(
            "/v1/completions", json=body | {"structured_outputs": {"regex": "(?=a)b"}}
        )
    assert engine.checked[0].constraint is not None
    assert engine.checked[0].constraint.choice == ("one", "two")
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "structured_outputs.regex"
