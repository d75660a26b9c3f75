"""The Responses API on the fake engine (fast): the stored object, the event order, replays,
background runs, cancel and delete, input items, conversations, ownership, bad input; on the
real engine in tests/api/clients/test_responses_clients.py."""

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from server.api.openapi import ResponseObject, ResponseStreamEvent
from server.responses import store
from tests.fakes import FakeEngine, fake_client

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 3,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
IMAGE = {"type": "input_image", "image_url": "https://example.com/a.png"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def engine() -> FakeEngine:
    fake = FakeEngine()
    fake.max_model_len = 400  # room for a few turns of conversation
    return fake


@pytest.fixture
def http(engine: FakeEngine) -> Iterator[TestClient]:
    with fake_client(engine, api_keys="key-a,key-b", admin_key="admin-key") as client:
        yield client


def _client(http: httpx.Client, key: str = "key-a") -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0
    )


def _events(http: TestClient, path: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The SSE events of a stream, parsed; checks the framing (`event:` = the data's type)."""
    kwargs.setdefault("headers", {"authorization": "Bearer key-a"})
    with http.stream(kwargs.pop("method", "GET"), path, **kwargs) as r:
        assert r.status_code == 200, r.read()
        text = r.read().decode()
    events = []
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        assert [line.split(": ", 1)[0] for line in lines] == ["event", "data"], block
        event = json.loads(lines[1][len("data: ") :])
        assert event["type"] == lines[0][len("event: ") :]
        events.append(event)
    return events


def test_a_response_is_generated_stored_and_retrieved(http: TestClient) -> None:
    client = _client(http)
    made = client.responses.create(model="fake", input="Hi", metadata={"run": "1"})
    assert (made.status, made.output_text) == ("completed", "one two three")
    assert made.id.startswith("resp_")
    assert len(made.id) > 40
    assert made.usage is not None
    assert made.usage.output_tokens == 3
    assert made.usage.total_tokens == made.usage.input_tokens + 3
    assert made.metadata == {"run": "1"}
    assert made.completed_at is not None
    again = client.responses.retrieve(made.id)
    assert again.model_dump() == made.model_dump()
    raw = http.get(f"/v1/responses/{made.id}", headers={"authorization": "Bearer key-a"})
    ResponseObject.model_validate(raw.json())  # what the OpenAPI document says, no more
    assert raw.json()["output_text"] == "one two three"  # for raw HTTP too, not only the SDKs


def test_streamed_events_come_in_order_with_sequence_numbers(http: TestClient) -> None:
    body = {"model": "fake", "input": "Hi", "stream": True}
    events = _events(http, "/v1/responses", method="POST", json=body)
    assert [e["type"] for e in events] == TEXT_EVENTS
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        ResponseStreamEvent.model_validate(event)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert deltas == final["output"][0]["content"][0]["text"] == "one two three"
    # The stored event log replays from any point, ending with the same terminal event.
    rid = final["id"]
    assert _events(http, f"/v1/responses/{rid}?stream=true") == events
    assert _events(http, f"/v1/responses/{rid}?stream=true&starting_after=5") == events[6:]


def test_a_token_budget_that_runs_out_makes_an_incomplete_response(http: TestClient) -> None:
    made = _client(http).responses.create(model="fake", input="Hi", max_output_tokens=2)
    assert made.status == "incomplete"
    assert made.incomplete_details is not None
    assert made.incomplete_details.reason == "max_output_tokens"
    assert made.output_text == "one two"


def test_a_failed_generation_ends_with_response_failed(engine: FakeEngine) -> None:
    engine.fail_after = 1
    with fake_client(engine) as http:
        headers = {"authorization": "Bearer x"}
        body = {"model": "fake", "input": "Hi", "stream": True}
        events = _events(http, "/v1/responses", method="POST", json=body, headers=headers)
        assert events[-1]["type"] == "response.failed"
        assert events[-1]["response"]["error"]["code"] == "engine_error"
        stored = http.get(f"/v1/responses/{events[-1]['response']['id']}").json()
    assert stored["status"] == "failed"


def test_a_conversation_continues_from_the_previous_response(http: TestClient) -> None:
    client = _client(http)
    first = client.responses.create(model="fake", input="Hi", instructions="Be brief.")
    second = client.responses.create(model="fake", input="Again", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert second.instructions is None
    # The second prompt holds the first turn and its answer, not the first's instructions.
    alone = client.responses.create(model="fake", input="Again")
    turn = "<user>Hi<assistant>one two three"
    assert second.usage is not None
    assert alone.usage is not None
    assert second.usage.input_tokens == alone.usage.input_tokens + len(turn)


def test_a_function_call_round_trip(engine: FakeEngine, http: TestClient) -> None:
    client = _client(http)
    engine.tool_call = ("get_weather", '{"city": "Lyon"}')
    called = client.responses.create(model="fake", input="Weather in Lyon?", tools=[WEATHER])
    (call,) = called.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Lyon"}
    engine.tool_call = None
    answered = client.responses.create(
        model="fake",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
        tools=[WEATHER],
    )
    assert answered.output_text == "one two three"
    # A result for a call nobody made is refused, naming the field.
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="fake",
            input=[{"type": "function_call_output", "call_id": "call_nobody", "output": "x"}],
        )
    assert "call_nobody" in refused.value.message


def test_streamed_function_calls_carry_argument_deltas(
    engine: FakeEngine, http: TestClient
) -> None:
    engine.tool_call = ("get_weather", '{"city": "Lyon"}')
    body = {"model": "fake", "input": "Weather?", "tools": [WEATHER], "stream": True}
    events = _events(http, "/v1/responses", method="POST", json=body)
    kinds = [e["type"] for e in events]
    assert kinds[2] == "response.output_item.added"
    assert events[2]["item"]["type"] == "function_call"
    fragments = [e["delta"] for e in events if e["type"].endswith("arguments.delta")]
    (done,) = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert "".join(fragments) == done["arguments"] == '{"city": "Lyon"}'
    assert kinds[-1] == "response.completed"


def test_a_background_response_runs_without_a_client(engine: FakeEngine, http: TestClient) -> None:
    engine.delay_s = 0.05
    client = _client(http)
    queued = client.responses.create(model="fake", input="Hi", background=True)
    assert queued.status in ("queued", "in_progress")
    assert queued.background
    deadline = time.monotonic() + 10
    while (got := client.responses.retrieve(queued.id)).status == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert (got.status, got.output_text) == ("completed", "one two three")


def test_cancel_stops_a_background_response_and_is_idempotent(
    engine: FakeEngine, http: TestClient
) -> None:
    engine.delay_s = 0.2
    engine.script = ["word"] * 40
    client = _client(http)
    started = client.responses.create(model="fake", input="Hi", background=True)
    cancelled = client.responses.cancel(started.id)
    assert cancelled.status == "cancelled"
    assert client.responses.cancel(started.id).model_dump() == cancelled.model_dump()
    assert client.responses.retrieve(started.id).status == "cancelled"
    events = _events(http, f"/v1/responses/{started.id}?stream=true")
    assert events[-1]["type"] == "response.cancelled"


def test_delete_removes_a_response(http: TestClient) -> None:
    client = _client(http)
    made = client.responses.create(model="fake", input="Hi")
    deleted = http.delete(f"/v1/responses/{made.id}", headers={"authorization": "Bearer key-a"})
    assert deleted.json() == {"id": made.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)


def test_input_items_are_listed_in_pages(http: TestClient) -> None:
    client = _client(http)
    given = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    made = client.responses.create(model="fake", input=given)  # type: ignore[arg-type]
    newest_first = client.responses.input_items.list(made.id, limit=2)
    assert [item.content[0].text for item in newest_first.data] == ["message 4", "message 3"]
    assert newest_first.has_more
    everything = list(client.responses.input_items.list(made.id, order="asc", limit=2))
    assert [item.content[0].text for item in everything] == [f"message {i}" for i in range(5)]
    assert len({item.id for item in everything}) == 5


def test_a_key_sees_only_its_own_responses(http: TestClient) -> None:
    made = _client(http, "key-a").responses.create(model="fake", input="Hi")
    other = _client(http, "key-b")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.input_items.list(made.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(made.id, stream=True, starting_after=2)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(made.id)
    with pytest.raises(openai.BadRequestError) as refused:  # nor continue it
        other.responses.create(model="fake", input="x", previous_response_id=made.id)
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert _client(http, "admin-key").responses.retrieve(made.id).id == made.id


def test_the_store_keeps_at_most_responses_max_stored(engine: FakeEngine) -> None:
    with fake_client(engine, responses_max_stored=2) as http:
        client = _client(http, "anyone")
        made = [client.responses.create(model="fake", input="Hi").id for _ in range(3)]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(made[0])  # the oldest went
        assert [client.responses.retrieve(rid).id for rid in made[1:]] == made[1:]


def test_responses_past_their_retention_time_are_removed(engine: FakeEngine) -> None:
    with fake_client(engine, responses_retention_s=0.2) as http:
        client = _client(http, "anyone")
        old = client.responses.create(model="fake", input="Hi").id
        time.sleep(0.3)  # past the retention time, whatever the machine's speed
        client.responses.create(model="fake", input="Hi")
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(old)


def test_store_false_keeps_nothing(http: TestClient) -> None:
    client = _client(http)
    made = client.responses.create(model="fake", input="Hi", store=False)
    assert made.output_text == "one two three"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)


def test_usage_counts_a_response_once_however_often_it_is_replayed(http: TestClient) -> None:
    admin = {"authorization": "Bearer admin-key"}
    made = _client(http).responses.create(model="fake", input="Hi")
    for _ in range(3):
        _events(http, f"/v1/responses/{made.id}?stream=true")
        _client(http).responses.retrieve(made.id)
    rows = http.get("/v1/usage", params={"group_by": "mode"}, headers=admin).json()["data"]
    assert [(r["mode"], r["requests"], r["completion_tokens"]) for r in rows] == [("live", 1, 3)]


def test_truncation_auto_drops_the_oldest_turns(engine: FakeEngine, http: TestClient) -> None:
    engine.max_model_len = 64
    client = _client(http)
    long_turns = [{"role": "user", "content": "x" * 20} for _ in range(3)]
    given = [*long_turns, {"role": "user", "content": "last"}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="fake", input=given)  # type: ignore[arg-type]
    assert refused.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert refused.value.body["param"] == "input"  # type: ignore[index]
    made = client.responses.create(model="fake", input=given, truncation="auto")  # type: ignore[arg-type]
    assert made.status in ("completed", "incomplete")
    assert made.truncation == "auto"
    assert made.usage is not None
    assert made.usage.input_tokens < 64


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"reasoning": {"effort": "low"}}, "reasoning"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"background": True, "store": False}, "background"),
        ({"max_output_tokens": 1000}, "max_output_tokens"),  # over the context
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input.0.content.0.type",
        ),
        ({"previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"temperature": 3}, "temperature"),
        ({"made_up": 1}, "made_up"),
        (
            {"tools": [WEATHER | {"parameters": {"type": "object", "not": {}}}]},
            "tools.0.parameters",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    http: TestClient, body: dict[str, Any], param: str
) -> None:
    answer = http.post(
        "/v1/responses",
        json={"model": "fake", "input": "Hi"} | body,
        headers={"authorization": "Bearer key-a"},
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"


def test_a_response_whose_process_died_reads_as_failed(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(http)
    made = client.responses.create(model="fake", input="Hi")
    state = http.app.state.kangaroo  # type: ignore[attr-defined]
    # As a process killed mid-generation leaves it: in progress, its claim run out.
    lost = made.model_dump() | {"status": "in_progress"}
    with state.responses._db.transaction() as db:
        db.execute(
            "UPDATE responses SET response = ?, alive_until = ?, conversation = NULL WHERE id = ?",
            (json.dumps(lost), time.time() - store.CLAIM_S, made.id),
        )
        db.execute("DELETE FROM response_events WHERE response_id = ? AND seq > 3", (made.id,))
    got = client.responses.retrieve(made.id)
    assert got.status == "failed"
    assert got.error is not None
    events = _events(http, f"/v1/responses/{made.id}?stream=true")
    assert [e["sequence_number"] for e in events] == list(range(5))
    assert events[-1]["type"] == "response.failed"
