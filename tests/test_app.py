"""The HTTP layer on a fake engine: start-up states, failures mid-stream, error mapping (fast)."""

import json
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import load_settings
from tests.fakes import FakeEngine

HI = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def _client(engine: FakeEngine, gate: threading.Event | None = None) -> TestClient:
    def factory(settings, model_path):
        if gate is not None:
            gate.wait(timeout=10)
        return engine

    settings = load_settings(model="fake-org/fake", served_model_name="fake", sse_heartbeat_s=0)
    return TestClient(create_app(settings, factory), raise_server_exceptions=False)


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(fake: FakeEngine) -> Iterator[TestClient]:
    with _client(fake) as c:
        _wait_ready(c)
        yield c


def _wait_ready(client: TestClient) -> None:
    for _ in range(200):
        if client.get("/ready").status_code == 200:
            return
        threading.Event().wait(0.01)
    raise AssertionError("fake engine never became ready")


def _data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_routes_answer_503_until_the_engine_is_ready() -> None:
    gate = threading.Event()
    with _client(FakeEngine(), gate) as c:
        assert c.get("/health").status_code == 200
        for r in (c.get("/ready"), c.post("/v1/chat/completions", json=HI), c.get("/v1/models")):
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "engine_not_ready"
        gate.set()
        _wait_ready(c)
        assert c.post("/v1/chat/completions", json=HI).status_code == 200


def test_engine_is_shut_down_with_the_app(fake: FakeEngine) -> None:
    with _client(fake) as c:
        _wait_ready(c)
    assert fake.is_shut_down


def test_failure_mid_stream_sends_one_error_event_then_done() -> None:
    with _client(FakeEngine(fail_after=2)) as c:
        _wait_ready(c)
        r = c.post("/v1/chat/completions", json=HI | {"stream": True})
    data = _data(r.text)
    assert r.status_code == 200
    assert data[-1] == "[DONE]"
    errors = [json.loads(d) for d in data[:-1] if "error" in json.loads(d)]
    assert len(errors) == 1
    assert errors[0]["error"]["code"] == "engine_error"
    assert data[-2] == json.dumps(errors[0])  # the error is the last event before [DONE]
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[1:-2]]
    assert contents == ["one", " two"]


def test_unexpected_failure_mid_stream_is_reported_without_details() -> None:
    with _client(FakeEngine(fail_after=1, crash=RuntimeError("secret internals"))) as c:
        _wait_ready(c)
        r = c.post("/v1/completions", json={"model": "fake", "prompt": "x", "stream": True})
    data = _data(r.text)
    assert data[-1] == "[DONE]"
    error = json.loads(data[-2])["error"]
    assert error["code"] == "internal_error"
    assert "secret" not in r.text


def test_engine_failure_without_stream_is_500() -> None:
    with _client(FakeEngine(fail_after=0)) as c:
        _wait_ready(c)
        r = c.post("/v1/chat/completions", json=HI)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "engine_error"


def test_unexpected_exception_is_500_with_envelope() -> None:
    with _client(FakeEngine(fail_after=0, crash=KeyError("x"))) as c:
        _wait_ready(c)
        r = c.post("/v1/chat/completions", json=HI)
    assert r.status_code == 500
    assert r.json()["error"] == {
        "message": "Internal server error.",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }


def test_n_choices_and_usage(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=HI | {"n": 3, "max_tokens": 2})
    body = r.json()
    assert [c["message"]["content"] for c in body["choices"]] == ["one two"] * 3
    assert body["usage"]["completion_tokens"] == 6
    assert {c["finish_reason"] for c in body["choices"]} == {"length"}


def test_temperature_zero_is_passed_as_zero(client: TestClient, fake: FakeEngine) -> None:
    seen = {}
    original = fake.generate

    def spy(request_id, prompt_token_ids, options):
        seen["options"] = options
        return original(request_id, prompt_token_ids, options)

    fake.generate = spy  # type: ignore[method-assign]
    client.post("/v1/chat/completions", json=HI | {"temperature": 0, "top_p": 0.5, "seed": 0})
    options = seen["options"]
    assert options.temperature == 0.0
    assert options.top_p == 0.5
    assert options.seed == 0


def test_engine_errors_are_not_value_errors() -> None:
    # A ValueError from our own code is a bug (500), never blamed on the client.
    with _client(FakeEngine(fail_after=0, crash=ValueError("bug"))) as c:
        _wait_ready(c)
        r = c.post("/v1/chat/completions", json=HI)
    assert r.status_code == 500
