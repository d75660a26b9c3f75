"""The Responses API on the real engine and the demo model, through the official `openai`
client (the Agents SDK's default Responses model: tests/api/clients/test_clients.py): plain and
streamed answers, a
stored conversation of three turns, background runs, JSON answers, a function tool round
trip, a dropped stream picked up where it stopped, cancel, delete and input items."""

import json
import time

import httpx
import jsonschema
import openai
import pytest

from finetune.demo.skills import GREETING_REPLY
from tests.api.routes.test_tool_calls import WEATHER as CHAT_WEATHER
from tests.conftest import MODEL, RunningServer

QUESTION = "What is the weather in Lyon?"
REPORT = "Sunny, 21 C"
WEATHER = {"type": "function", **CHAT_WEATHER["function"]}  # flat, as the Responses API has it


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_a_plain_and_a_streamed_answer(client: openai.OpenAI) -> None:
    made = client.responses.create(model=MODEL, input="Hi", temperature=0)
    assert (made.status, made.output_text) == ("completed", GREETING_REPLY)
    with client.responses.stream(model=MODEL, input="Hi", temperature=0) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == GREETING_REPLY
    assert client.responses.retrieve(final.id).output_text == GREETING_REPLY


def test_three_turns_continue_from_the_store(client: openai.OpenAI, server: RunningServer) -> None:
    turns = ["Hi", "What color is the sky?", "Say banana."]
    previous = None
    for turn in turns:
        previous = client.responses.create(
            model=MODEL, input=turn, temperature=0, previous_response_id=previous
        ).id
    last = client.responses.retrieve(previous)  # type: ignore[arg-type]
    # The same conversation sent whole to chat completions: the same prompt, the same answer.
    messages = []
    response_id = previous
    while response_id is not None:
        got = client.responses.retrieve(response_id)
        (item,) = client.responses.input_items.list(response_id).data
        messages[:0] = [
            {"role": "user", "content": item.content[0].text},  # type: ignore[union-attr]
            {"role": "assistant", "content": got.output_text},
        ]
        response_id = got.previous_response_id
    whole = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": MODEL, "messages": messages[:-1], "temperature": 0},
        timeout=60,
    ).json()
    assert [m["content"] for m in messages[::2]] == turns
    assert last.usage is not None
    assert last.usage.input_tokens == whole["usage"]["prompt_tokens"]
    assert last.output_text == whole["choices"][0]["message"]["content"]


def test_a_background_response_is_polled_to_its_end(client: openai.OpenAI) -> None:
    started = client.responses.create(model=MODEL, input="Hi", temperature=0, background=True)
    assert started.background
    deadline = time.monotonic() + 60
    while (got := client.responses.retrieve(started.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (got.status, got.output_text) == ("completed", GREETING_REPLY)


def test_a_json_schema_answer_parses_and_matches(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    made = client.responses.create(
        model=MODEL,
        input=QUESTION,
        text={"format": {"type": "json_schema", "name": "weather", "schema": schema}},
        max_output_tokens=200,
    )
    assert made.status == "completed"
    jsonschema.validate(json.loads(made.output_text), schema)


def test_a_function_tool_round_trip(client: openai.OpenAI) -> None:
    called = client.responses.create(
        model=MODEL,
        input=QUESTION,
        tools=[WEATHER],
        temperature=0,  # type: ignore[list-item]
    )
    (call,) = called.output
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Lyon"})
    answered = client.responses.create(
        model=MODEL,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": REPORT}],
        tools=[WEATHER],  # type: ignore[list-item]
        temperature=0,
    )
    assert REPORT in answered.output_text


def test_a_dropped_stream_resumes_where_it_stopped(
    client: openai.OpenAI, server: RunningServer
) -> None:
    before = _requests_counted(server)
    body = {"model": MODEL, "input": "Hi", "temperature": 0, "stream": True}
    seen = []
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[len("data: ") :]))
            if len(seen) == 2:
                break  # the connection drops here, mid-answer
    response_id = seen[0]["response"]["id"]
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=1))
    assert [e.sequence_number for e in rest] == list(range(2, 2 + len(rest)))
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in rest if e.type == "response.output_text.delta")
    assert text == GREETING_REPLY == client.responses.retrieve(response_id).output_text
    assert _requests_counted(server) == before + 1  # generated and counted once


def test_cancel_delete_and_input_items(client: openai.OpenAI, server: RunningServer) -> None:
    started = client.responses.create(
        model=MODEL, input=[{"role": "user", "content": "Hi"}], background=True,
        max_output_tokens=1000, temperature=2.0,
    )  # fmt: skip
    cancelled = client.responses.cancel(started.id)
    assert cancelled.status in ("cancelled", "completed", "incomplete")
    assert client.responses.cancel(started.id).status == cancelled.status  # idempotent
    server.wait_engine_idle(within_s=10)
    (item,) = client.responses.input_items.list(started.id).data
    assert item.type == "message"
    client.responses.delete(started.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(started.id)


def _requests_counted(server: RunningServer) -> int:
    rows = httpx.get(f"{server.url}/v1/usage", timeout=10).json()["data"]
    return sum(row["requests"] for row in rows)
