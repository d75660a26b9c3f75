"""Tool calls on the real engine, through the official OpenAI client and raw SSE: the shapes
clients assemble, finish reasons, forced and parallel calls, the generic format, and the demo
model's own weather tool in a full agent loop."""

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from finetune.demo import skills
from tests.conftest import APP_KEY, MODEL, RunningServer, bearer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# The same, its string bounded: a forced call on a model that never learned the tool would
# otherwise write a city name until max_tokens.
SHORT_WEATHER = {
    "type": "function",
    "function": {
        **WEATHER["function"],
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "JST"]}},
            "required": ["zone"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Lyon?"}]


def _events(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as response:
        assert response.status_code == 200, response.read()
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def _assembled(chunks: list[dict[str, Any]]) -> Any:
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(openai.types.chat.ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion().choices[0]


def _check_call_deltas(chunks: list[dict[str, Any]]) -> None:
    """First delta of each call: index, id, type, name, arguments ""; later ones: index and
    argument text only; indices 0..n-1 in order."""
    seen: list[int] = []
    for chunk in chunks:
        for entry in chunk["choices"][0]["delta"].get("tool_calls") or ():
            if entry["index"] not in seen:
                assert entry["index"] == len(seen)
                assert set(entry) == {"index", "id", "type", "function"}
                assert entry["type"] == "function"
                assert entry["id"]
                assert entry["function"]["arguments"] == ""
                assert entry["function"]["name"] in ("get_weather", "get_time")
                seen.append(entry["index"])
            else:
                assert set(entry) == {"index", "function"}
                assert set(entry["function"]) == {"arguments"}
    assert seen


@pytest.mark.parametrize(
    ("choice", "finish"),
    [("required", "tool_calls"), ({"type": "function", "function": {"name": "get_time"}}, "stop")],
)
def test_forced_calls_stream_in_the_shape_clients_assemble(
    http: httpx.Client, client: openai.OpenAI, choice: Any, finish: str
) -> None:
    tools = [SHORT_WEATHER, TIME]
    body = {"model": MODEL, "messages": ASK, "tools": tools, "tool_choice": choice}
    body |= {"temperature": 0, "max_tokens": 120}
    chunks = _events(http, body)
    _check_call_deltas(chunks)
    streamed = _assembled(chunks)
    assert streamed.finish_reason == finish
    whole = client.chat.completions.create(**body).choices[0]
    assert whole.finish_reason == finish
    # The same calls (ids aside, each request makes its own), and arguments that match.
    pairs = zip(streamed.message.tool_calls or (), whole.message.tool_calls or (), strict=True)
    for got, want in pairs:
        assert (got.function.name, got.function.arguments) == (
            want.function.name,
            want.function.arguments,
        )
        tool = SHORT_WEATHER if got.function.name == "get_weather" else TIME
        jsonschema.validate(json.loads(got.function.arguments), tool["function"]["parameters"])
    if isinstance(choice, dict):
        assert [c.function.name for c in whole.message.tool_calls or ()] == ["get_time"]


def test_one_call_when_parallel_calls_are_off(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[SHORT_WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=200,
    )
    assert len(reply.choices[0].message.tool_calls or []) == 1


def test_length_wins_over_tool_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=3
    )
    assert reply.choices[0].finish_reason == "length"


def test_tool_choice_none_calls_nothing(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=60
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_the_generic_format_for_templates_that_ignore_tools(prod: RunningServer) -> None:
    # The production-like server is set to tool_call_parser = "generic": tools described in the
    # system message, calls in <tool_call> tags the grammar enforces.
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=APP_KEY, max_retries=0)
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        tools=[TIME],
        tool_choice="required",
        temperature=0,
        max_tokens=100,
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_time"
    jsonschema.validate(json.loads(call.function.arguments), TIME["function"]["parameters"])
    with httpx.Client(base_url=prod.url, headers=bearer(APP_KEY), timeout=60) as http:
        body = {"model": MODEL, "messages": ASK, "tools": [TIME], "tool_choice": "required"}
        _check_call_deltas(_events(http, body | {"temperature": 0, "max_tokens": 100}))


def _weather_loop(
    client: openai.OpenAI, question: str, report: str, tool: dict[str, Any] = WEATHER
) -> tuple[Any, str]:
    """Ask, let the model call `tool` (get_weather), answer the call with `report`; the call
    and the final answer."""
    messages: list[Any] = [{"role": "user", "content": question}]
    first = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[tool], temperature=0, max_tokens=60
    ).choices[0]
    calls = first.message.tool_calls or []
    if first.finish_reason != "tool_calls" or len(calls) != 1:
        return None, first.message.content or ""
    messages += [
        first.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[0].id, "content": report},
    ]
    final = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[tool], temperature=0, max_tokens=60
    ).choices[0]
    return calls[0], final.message.content or ""


def test_the_demo_model_calls_its_weather_tool_for_cities_it_never_saw(
    client: openai.OpenAI,
) -> None:
    cases = skills.weather_heldout_cases()
    right_calls = right_answers = 0
    for case in cases:
        # The tool as the skill is specified: no description. With WEATHER's description the
        # model miscopies a two-word city a case or two more often (50 of 56 on one build,
        # against 52 without), too close to the line for a build on another CPU.
        call, answer = _weather_loop(client, case.question, case.report, skills.WEATHER_TOOL)
        if call is not None and json.loads(call.function.arguments) == {"city": case.city}:
            right_calls += 1
        right_answers += case.report in answer
    assert right_calls >= 0.9 * len(cases)
    assert right_answers >= 0.9 * len(cases)


def test_without_tools_the_demo_model_answers_as_before(client: openai.OpenAI) -> None:
    cases = skills.heldout_cases()
    right = 0
    for case in cases:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": case.prompt}],
            temperature=0,
            max_tokens=32,
        )
        right += skills.is_correct(case, reply.choices[0].message.content or "")
    assert right >= 0.9 * len(cases)


@pytest.mark.parametrize("question", [ASK[0]["content"], "Tell me the color of a banana."])
def test_with_a_response_format_it_calls_a_tool_or_answers_valid_json(
    client: openai.OpenAI, question: str
) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 30}},
        "required": ["answer"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    choice = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        tools=[SHORT_WEATHER],
        response_format=fmt,
        temperature=0,
        max_tokens=80,
    ).choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        jsonschema.validate(
            json.loads(call.function.arguments), SHORT_WEATHER["function"]["parameters"]
        )
    else:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), schema)
