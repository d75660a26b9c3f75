"""The Batch API through the official client, on the fake engine (fast): the lifecycle, output
and error files, validation, ownership, idempotent create, cancel and expiry; and once on the
real production-like server with structured outputs and tools in the lines."""

import io
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from fastapi.testclient import TestClient

from finetune.demo import skills
from tests.conftest import (
    ADMIN_KEY,
    APP_KEY,
    LONG,
    MODEL,
    USAGE_KEY,
    RunningServer,
    bearer,
    metric_samples,
)
from tests.fakes import CountingEngine, FakeEngine, fake_client

ENDED = ("completed", "failed", "expired", "cancelled")


def line(custom_id: str, body: dict[str, Any], url: str = "/v1/chat/completions") -> bytes:
    """One input line."""
    item = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
    return json.dumps(item).encode() + b"\n"


def chat(text: str = "hi", **extra: Any) -> dict[str, Any]:
    """A chat request body for the fake model."""
    return {"model": "fake", "messages": [{"role": "user", "content": text}]} | extra


@pytest.fixture
def keyed() -> Iterator[TestClient]:
    with fake_client(api_keys="key-a,key-b", admin_key="admin-key") as client:
        yield client


def _client(http: httpx.Client, key: str, base_url: str = "http://testserver/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, http_client=http, max_retries=0)


def _submit(client: openai.OpenAI, data: bytes, **create: Any) -> Any:
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    params = {"endpoint": "/v1/chat/completions", "completion_window": "24h"} | create
    return client.batches.create(input_file_id=upload.id, **params)


def _wait(client: openai.OpenAI, batch_id: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ENDED:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not end: {batch.status}")


def _lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    rows = [json.loads(row) for row in client.files.content(file_id).text.splitlines()]
    return {row["custom_id"]: row for row in rows}


def test_a_batch_runs_each_line_through_the_live_route(keyed: TestClient) -> None:
    client = _client(keyed, "key-a")
    data = line("a", chat("one")) + line("b", chat("two", max_tokens=2))
    data += line("bad", chat("three", temperature=5))
    created = _submit(client, data, metadata={"job": "nightly"})
    assert (created.status, created.metadata) == ("validating", {"job": "nightly"})
    assert created.id.startswith("batch_")
    batch = _wait(client, created.id)
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 2, "failed": 1}
    assert batch.in_progress_at
    assert batch.finalizing_at
    assert batch.completed_at
    output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
    assert set(output) == {"a", "b"}
    for row in output.values():
        assert row["response"]["status_code"] == 200
        assert row["response"]["body"]["object"] == "chat.completion"
        assert row["id"].startswith("batch_req_")
        assert row["error"] is None
    assert output["b"]["response"]["body"]["usage"]["completion_tokens"] == 2
    # The error line carries what the live route answers for the same body.
    live = keyed.post(
        "/v1/chat/completions",
        json=chat("three", temperature=5),
        headers={"Authorization": "Bearer key-a"},
    )
    assert errors["bad"]["response"] == {
        "status_code": 400,
        "request_id": None,
        "body": live.json(),
    }
    bodies = [row["response"]["body"]["usage"] for row in output.values()]
    assert batch.usage.input_tokens == sum(u["prompt_tokens"] for u in bodies)
    assert batch.usage.output_tokens == sum(u["completion_tokens"] for u in bodies)
    # The results belong to the batch's key.
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    with pytest.raises(openai.NotFoundError):
        _client(keyed, "key-b").files.retrieve(batch.output_file_id)


@pytest.mark.parametrize(
    ("data", "code", "number"),
    [
        (line("a", chat()) + b"{not json\n", "invalid_json_line", 2),
        (line("a", chat()) + line("a", chat()), "duplicate_custom_id", 2),
        (line("a", chat(), url="/v1/completions"), "invalid_request", 1),
        (line("a", chat(stream=True)), "invalid_request", 1),
        (b"\n", "empty_file", 1),
    ],
)
def test_a_file_that_does_not_validate_fails_the_batch(
    keyed: TestClient, data: bytes, code: str, number: int
) -> None:
    client = _client(keyed, "key-a")
    batch = _wait(client, _submit(client, data).id)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    (error,) = batch.errors.data
    assert (error.code, error.line) == (code, number)
    assert batch.output_file_id is None


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "forever"}, "completion_window"),
        ({"completion_window": "9999h"}, "completion_window"),
        ({"input_file_id": "file-nope"}, "input_file_id"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
    ],
)
def test_bad_creates_are_refused_naming_the_field(
    keyed: TestClient, change: dict[str, Any], param: str
) -> None:
    client = _client(keyed, "key-a")
    upload = client.files.create(file=("in.jsonl", io.BytesIO(line("a", chat()))), purpose="batch")
    body = {"input_file_id": upload.id, "endpoint": "/v1/chat/completions"} | change
    reply = keyed.post("/v1/batches", json=body, headers={"Authorization": "Bearer key-a"})
    assert reply.status_code in (400, 404), reply.text
    assert reply.json()["error"]["param"].startswith(param)
    assert client.batches.list().data == []


def test_a_key_sees_only_its_own_batches_and_input_files(keyed: TestClient) -> None:
    a, b = _client(keyed, "key-a"), _client(keyed, "key-b")
    mine = _submit(a, line("a", chat()))
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        b.batches.cancel(mine.id)
    with pytest.raises(openai.NotFoundError):  # another key's file as input
        b.batches.create(
            input_file_id=mine.input_file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    assert b.batches.list().data == []
    assert [x.id for x in _client(keyed, "admin-key").batches.list()] == [mine.id]


def test_a_retried_create_with_the_same_idempotency_key_starts_nothing_new(
    keyed: TestClient,
) -> None:
    client = _client(keyed, "key-a")
    upload = client.files.create(file=("in.jsonl", io.BytesIO(line("a", chat()))), purpose="batch")
    params = {"input_file_id": upload.id, "endpoint": "/v1/chat/completions"}
    headers = {"Authorization": "Bearer key-a", "Idempotency-Key": "retry-1"}
    first = keyed.post("/v1/batches", json=params, headers=headers).json()
    again = keyed.post("/v1/batches", json=params, headers=headers).json()
    assert again["id"] == first["id"]
    other = keyed.post("/v1/batches", json=params, headers={"Authorization": "Bearer key-a"})
    assert other.json()["id"] != first["id"]
    assert len(client.batches.list().data) == 2


def test_pages_of_batches(keyed: TestClient) -> None:
    client = _client(keyed, "key-a")
    ids = [_submit(client, line("a", chat())).id for _ in range(3)]
    page = client.batches.list(limit=2)
    assert [x.id for x in page.data] == ids[::-1][:2]
    assert page.has_more
    assert [x.id for x in client.batches.list(limit=2)] == ids[::-1]


def test_cancel_keeps_the_finished_lines() -> None:
    engine = FakeEngine()
    engine.delay_s = 0.05
    with fake_client(engine, batch_concurrency=1) as http:
        client = _client(http, "unused")
        # 100 lines of 4 words 50 ms apart, one at a time: 20 s of work left to cancel.
        data = b"".join(line(f"r{i}", chat(max_tokens=4)) for i in range(100))
        created = _submit(client, data)
        while client.batches.retrieve(created.id).request_counts.completed < 2:
            time.sleep(0.05)
        assert client.batches.cancel(created.id).status == "cancelling"
        batch = _wait(client, created.id)
        assert batch.status == "cancelled"
        assert batch.cancelled_at is not None
        done = _lines(client, batch.output_file_id)
        assert 2 <= len(done) < 100
        assert batch.request_counts.completed == len(done)
        assert client.batches.cancel(created.id).status == "cancelled"  # idempotent


def test_an_expired_batch_keeps_what_ran_and_lists_the_rest() -> None:
    engine = FakeEngine()
    engine.delay_s = 0.05
    with fake_client(engine, batch_concurrency=1) as http:
        client = _client(http, "unused")
        # 200 lines of 8 words 50 ms apart, one at a time: 80 s of work in a 5 s window.
        data = b"".join(line(f"r{i}", chat(max_tokens=8)) for i in range(200))
        batch = _wait(client, _submit(client, data, completion_window="5s").id)
        assert batch.status == "expired"
        done, left = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
        assert done
        assert set(done) | set(left) == {f"r{i}" for i in range(200)}
        assert not set(done) & set(left)
        assert {row["error"]["code"] for row in left.values()} == {"batch_expired"}


def test_a_batch_on_the_real_engine(prod: RunningServer) -> None:
    schema = {
        "type": "object",
        "properties": {"color": {"type": "string", "maxLength": 12}},
        "required": ["color"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    cases = skills.heldout_cases()[:4]
    data = b"".join(
        line(
            f"q{i}",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": c.prompt}],
                "temperature": 0,
                "max_tokens": 32,
            },
        )
        for i, c in enumerate(cases)
    )
    data += line(
        "json",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "response_format": fmt,
            "max_tokens": 40,
        },
    )
    weather = skills.weather_heldout_cases()[0]
    data += line(
        "tool",
        {
            "model": MODEL,
            "tools": [skills.WEATHER_TOOL],
            "temperature": 0,
            "messages": weather.messages()[:1],
            "max_tokens": 40,
        },
    )
    data += line("nope", {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})
    with httpx.Client(timeout=30) as http:
        client = _client(http, APP_KEY, f"{prod.url}/v1")
        batch = _wait(client, _submit(client, data).id, timeout_s=180)
        assert batch.status == "completed"
        assert batch.request_counts.model_dump() == {"total": 7, "completed": 6, "failed": 1}
        output, errors = _lines(client, batch.output_file_id), _lines(client, batch.error_file_id)
        for i, case in enumerate(cases):
            live = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": case.prompt}],
                temperature=0,
                max_tokens=32,
            )
            answer = output[f"q{i}"]["response"]["body"]["choices"][0]["message"]["content"]
            assert answer == live.choices[0].message.content  # the same as served live
        content = output["json"]["response"]["body"]["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(content), schema)
        call = output["tool"]["response"]["body"]["choices"][0]["message"]["tool_calls"][0]
        live_call = (
            client.chat.completions.create(
                model=MODEL,
                tools=[skills.WEATHER_TOOL],  # type: ignore[list-item]
                temperature=0,
                messages=weather.messages()[:1],  # type: ignore[arg-type]
                max_tokens=40,
            )
            .choices[0]
            .message.tool_calls[0]
        )  # type: ignore[index]
        assert call["function"]["name"] == live_call.function.name == "get_weather"
        assert call["function"]["arguments"] == live_call.function.arguments
        assert errors["nope"]["response"]["status_code"] == 404
        with pytest.raises(openai.NotFoundError):
            _client(http, USAGE_KEY, f"{prod.url}/v1").batches.retrieve(batch.id)


def test_batch_lines_leave_places_to_live_requests() -> None:
    engine = CountingEngine()
    engine.released.clear()  # every line holds its place until the test has counted them
    with fake_client(engine, max_num_seqs=16, batch_concurrency=64) as http:
        client = _client(http, "unused")
        data = b"".join(line(f"r{i}", chat(max_tokens=4)) for i in range(30))
        batch_id = _submit(client, data).id
        deadline = time.monotonic() + 60
        while engine.now < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        engine.released.set()
        assert _wait(client, batch_id).status == "completed"
    assert engine.most == 15  # 16 places but one; without the cap, batch_concurrency (64)


def test_a_live_request_sheds_a_wide_batch_which_still_answers_each_line_once() -> None:
    engine = CountingEngine()
    engine.released.clear()  # every generation holds until the test has counted
    with fake_client(engine, max_num_seqs=16, batch_concurrency=64) as http:
        client = _client(http, "unused")
        data = b"".join(line(f"r{i}", chat(f"q{i}", max_tokens=4)) for i in range(30))
        batch_id = _submit(client, data).id
        _until(lambda: engine.now == 15)  # the batch runs wide: nothing live for a while
        with ThreadPoolExecutor(1) as pool:
            live = pool.submit(http.post, "/v1/chat/completions", json=chat(max_tokens=4))
            try:  # the batch is shed to one line (at the arrival; else at the next ticks)
                _until(lambda: engine.now == 2, timeout_s=30)
            finally:
                engine.released.set()
            assert live.result(timeout=60).status_code == 200
        batch = _wait(client, batch_id)
        rows = client.files.content(batch.output_file_id).text.splitlines()
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 30, "completed": 30, "failed": 0}
    ids = sorted(json.loads(row)["custom_id"] for row in rows)
    assert ids == sorted(f"r{i}" for i in range(30))  # each line once, shed or not


def _until(happened: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not happened():
        assert time.monotonic() < deadline, "it never happened"
        time.sleep(0.01)


def test_batch_lines_are_counted_apart_from_live_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = FakeEngine()
    with fake_client(engine, api_keys="key-a", admin_key="admin-key") as http:
        gaps: list[float] = []  # what the batch pacer reads of live token gaps
        live_latency = http.app.state.kangaroo.traffic.live_latency  # type: ignore[attr-defined]
        monkeypatch.setattr(live_latency, "add_gap", gaps.append)
        client = _client(http, "key-a")
        data = b"".join(line(f"r{i}", chat(max_tokens=3)) for i in range(3))
        assert _wait(client, _submit(client, data).id).status == "completed"
        assert gaps == []
        live = http.post("/v1/chat/completions", json=chat(max_tokens=3), headers=bearer("key-a"))
        assert live.status_code == 200
        assert len(gaps) == 2  # three tokens, one at a time
        usage = http.get("/v1/usage", params={"group_by": "mode"}, headers=bearer("admin-key"))
        usage = usage.json()["data"]
        metrics = metric_samples(http.get("/metrics", headers=bearer("admin-key")).text)
    assert [(row["mode"], row["requests"]) for row in usage] == [("batch", 3), ("live", 1)]
    # Latency histograms are the live requests' alone: a batch line's answer comes whole.
    ttft = [
        v for k, v in metrics.items() if k.startswith("kangaroo_time_to_first_token_seconds_count")
    ]
    assert ttft == [1.0]


def test_live_requests_are_served_while_a_large_batch_runs(prod: RunningServer) -> None:
    body = {**LONG, "model": MODEL, "max_tokens": 64}
    data = b"".join(line(f"r{i}", body) for i in range(200))
    with httpx.Client(timeout=120) as http:
        client = _client(http, APP_KEY, f"{prod.url}/v1")
        batch = _submit(client, data)
        while client.batches.retrieve(batch.id).request_counts.completed < 2:
            time.sleep(0.05)
        for _ in range(3):  # each one answered in full while the batch goes on
            live = http.post(f"{prod.url}/v1/chat/completions", json=body, headers=bearer(APP_KEY))
            assert live.json()["choices"][0]["finish_reason"] == "length"
            running = client.batches.retrieve(batch.id)
            assert running.status == "in_progress"
            assert running.request_counts.completed < 200
        client.batches.cancel(batch.id)
        ended = _wait(client, batch.id)
        usage = http.get(
            f"{prod.url}/v1/usage", params={"group_by": "key_id,mode"}, headers=bearer(ADMIN_KEY)
        ).json()["data"]
    assert ended.status == "cancelled"
    (batch_use,) = [r for r in usage if r["key_id"] == "app" and r["mode"] == "batch"]
    assert batch_use["requests"] >= ended.request_counts.completed >= 2
