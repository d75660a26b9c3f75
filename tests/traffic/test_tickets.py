"""Rate limits, the queue, deadlines, body limit, drain, engine death, metrics, usage and the
request log, over HTTP on the fake engine (fast); the *_on_engine.py files run them on the
real one."""

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient

from server.observability.logs import JsonFormatter
from server.state import ServerState
from tests.conftest import metric_samples
from tests.fakes import FakeEngine, fake_client

HI = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
WORDS = " ".join(f"w{i}" for i in range(60))  # max_model_len 64: room for a short prompt
ADMIN = {"Authorization": "Bearer admin-key"}


def _state(client: TestClient) -> ServerState:
    return client.app.state.kangaroo  # type: ignore[attr-defined]


def _events(text: str) -> list[Any]:
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [d if d == "[DONE]" else json.loads(d) for d in data]


def _slow(delay_s: float = 0.02) -> FakeEngine:
    engine = FakeEngine(WORDS)
    engine.delay_s = delay_s  # 60 words: 1.2 s at 0.02 s a word
    return engine


def test_rate_limit_429_and_ratelimit_headers() -> None:
    keys = [{"id": "app", "key": "app-key", "requests_per_minute": 2}]
    with fake_client(FakeEngine(), keys=keys) as client:
        auth = {"Authorization": "Bearer app-key"}
        ok = [client.post("/v1/chat/completions", json=HI, headers=auth) for _ in range(2)]
        assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["1", "0"]
        assert ok[0].headers["x-ratelimit-limit-requests"] == "2"
        refused = client.post("/v1/chat/completions", json=HI, headers=auth)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.headers["retry-after"] == "30"
        assert int(refused.headers["retry-after-ms"]) > 29_000
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_token_budget_counts_prompt_and_completion() -> None:
    keys = [{"id": "app", "key": "app-key", "tokens_per_minute": 60}]
    with fake_client(FakeEngine(), keys=keys) as client:
        auth = {"Authorization": "Bearer app-key"}
        r = client.post("/v1/chat/completions", json=HI | {"max_tokens": 3}, headers=auth)
        used = r.json()["usage"]["total_tokens"]
        remaining = int(r.headers["x-ratelimit-remaining-tokens"])  # before it settled
        assert remaining == 60 - (r.json()["usage"]["prompt_tokens"] + 3)
        after = client.get("/v1/models", headers=auth).headers["x-ratelimit-remaining-tokens"]
        assert 60 - used <= int(after) <= 60 - used + 2  # + what refilled meanwhile
        big = client.post("/v1/chat/completions", json=HI | {"max_tokens": 40}, headers=auth)
        assert big.status_code == 429  # its prompt and 40 tokens do not fit what is left
        assert big.json()["error"]["type"] == "tokens"


def test_a_deadline_stops_the_engine_request_and_answers_408() -> None:
    engine = _slow(0.2)  # 12 s to the end of the reply
    with fake_client(engine) as client:
        started = time.monotonic()
        r = client.post("/v1/chat/completions", json=HI, headers={"X-Request-Timeout": "0.2"})
        assert r.status_code == 408, r.text
        assert r.json()["error"]["code"] == "request_timeout"
        assert "0.2 s" in r.json()["error"]["message"]
        assert time.monotonic() - started < 6.0  # long before the reply would have ended
        assert len(engine.aborted) == 1  # the engine request itself was aborted


def test_a_deadline_mid_stream_is_an_error_event() -> None:
    with fake_client(_slow(), request_timeout_s=0.3) as client:
        r = client.post("/v1/chat/completions", json=HI | {"stream": True})
    events = _events(r.text)
    assert r.status_code == 200
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "request_timeout"
    contents = [e["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert contents
    assert all(contents)


def test_deadline_headers_can_only_shorten_and_must_be_numbers() -> None:
    with fake_client(FakeEngine(), request_timeout_s=5) as client:
        for value in ("soon", "0", "-1", "inf", "nan"):
            r = client.post("/v1/chat/completions", json=HI, headers={"X-Request-Timeout": value})
            assert r.status_code == 400, value
            assert r.json()["error"]["param"] == "x-request-timeout"
            assert value in r.json()["error"]["message"]
        r = client.post("/v1/chat/completions", json=HI, headers={"X-Request-Timeout": "9999"})
        assert r.status_code == 200  # asks for more than 5 s: gets 5 s


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.005)


def test_a_full_queue_answers_429_and_a_long_wait_408() -> None:
    engine = FakeEngine()
    with (
        fake_client(engine, max_num_seqs=1, max_waiting_requests=1) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        admission = _state(client).traffic.admission
        # The engine holds the running request until released, so the queue is in the state
        # each step needs however long the machine takes to get there.
        engine.released.clear()
        running = pool.submit(client.post, "/v1/chat/completions", json=HI)
        _until(lambda: admission.running == 1)
        waiting = pool.submit(
            client.post, "/v1/chat/completions", json=HI, headers={"X-Queue-Timeout": "30"}
        )
        _until(lambda: admission.waiting == 1)
        refused = client.post("/v1/chat/completions", json=HI)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "server_overloaded"
        assert int(refused.headers["retry-after-ms"]) >= 50
        engine.released.set()
        assert running.result().status_code == 200
        assert waiting.result().status_code == 200  # it got the place when the first ended

        engine.released.clear()
        running = pool.submit(client.post, "/v1/chat/completions", json=HI)
        _until(lambda: admission.running == 1)
        timed_out = client.post("/v1/chat/completions", json=HI, headers={"X-Queue-Timeout": "0.3"})
        assert timed_out.status_code == 408
        assert timed_out.json()["error"]["code"] == "queue_timeout"
        engine.released.set()
        assert running.result().status_code == 200
        assert client.post("/v1/chat/completions", json=HI).status_code == 200


def test_bodies_over_the_limit_get_413_declared_or_not() -> None:
    with fake_client(FakeEngine(), max_body_mib=0.001) as client:  # about 1 kB
        big = HI | {"user": "x" * 2000}
        r = client.post("/v1/chat/completions", json=big)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "request_too_large"
        chunked = client.post(
            "/v1/chat/completions",
            content=(chunk for chunk in [json.dumps(big).encode()[:900], b" " * 900]),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        assert chunked.json()["error"]["code"] == "request_too_large"
        assert client.post("/v1/chat/completions", json=HI).status_code == 200


def test_drain_finishes_running_streams_and_refuses_new_requests() -> None:
    with fake_client(_slow(0.01)) as client, ThreadPoolExecutor(2) as pool:
        stream = pool.submit(client.post, "/v1/chat/completions", json=HI | {"stream": True})
        time.sleep(0.1)
        drain = pool.submit(client.portal.call, _state(client).drain, 10.0)  # type: ignore[union-attr]
        time.sleep(0.05)
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "server_shutting_down"
        assert client.post("/v1/chat/completions", json=HI).status_code == 503
        events = _events(stream.result().text)
        assert events[-2]["choices"][0]["finish_reason"] == "length"  # it ran to its end
        drain.result(timeout=5)


def test_drain_timeout_stops_what_is_left_with_an_error_event() -> None:
    with fake_client(_slow(0.2)) as client, ThreadPoolExecutor(2) as pool:  # a 12 s reply
        stream = pool.submit(client.post, "/v1/chat/completions", json=HI | {"stream": True})
        admission = _state(client).traffic.admission
        _until(lambda: admission.running == 1)
        started = time.monotonic()
        client.portal.call(_state(client).drain, 0.3)  # type: ignore[union-attr]
        assert time.monotonic() - started < 6.0  # long before the reply would have ended
        events = _events(stream.result().text)
        assert events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == "server_shutting_down"


def test_a_dead_engine_turns_ready_503_and_stops_the_process() -> None:
    engine = FakeEngine()
    fatal = threading.Event()
    with fake_client(engine, on_fatal_error=fatal.set) as client:
        engine.alive = False
        time.sleep(0.8)  # the liveness check runs every 0.5 s
        for r in (client.get("/ready"), client.post("/v1/chat/completions", json=HI)):
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "engine_dead"
        assert not fatal.is_set()  # a grace second for in-flight errors and health checkers
        assert fatal.wait(3)


def test_metrics_need_an_admin_key_unless_open() -> None:
    keys = {"api_keys": "user-key", "admin_key": "admin-key"}
    with fake_client(FakeEngine(), **keys) as client:
        assert client.get("/metrics").status_code == 401
        assert (
            client.get("/metrics", headers={"Authorization": "Bearer user-key"}).status_code == 403
        )
        assert client.get("/metrics", headers=ADMIN).status_code == 200
    with fake_client(FakeEngine(), open_metrics=True, **keys) as client:
        assert client.get("/metrics").status_code == 200
    with fake_client(FakeEngine()) as client:  # no keys: the admin routes are for this machine
        assert client.get("/metrics").status_code == 403  # TestClient is not on loopback


def test_metrics_count_requests_tokens_refusals_and_latencies() -> None:
    keys = [{"id": "app", "key": "app-key", "requests_per_minute": 3}]
    with fake_client(FakeEngine(), keys=keys, open_metrics=True) as client:
        auth = {"Authorization": "Bearer app-key"}
        for _ in range(4):
            client.post("/v1/chat/completions", json=HI | {"max_tokens": 2}, headers=auth)
        text = client.get("/metrics").text
    samples = metric_samples(text)
    route = 'route="/v1/chat/completions"'  # labels come in alphabetical order
    assert samples[f'kangaroo_http_requests_total{{model="fake",{route},status="200"}}'] == 3
    assert samples[f'kangaroo_http_requests_total{{model="",{route},status="429"}}'] == 1
    assert samples['kangaroo_rejected_requests_total{reason="rate_limit_exceeded"}'] == 1
    assert samples['kangaroo_completion_tokens_total{key_id="app",mode="live",model="fake"}'] == 6
    assert samples['kangaroo_generations_total{outcome="completed"}'] == 3
    assert samples['kangaroo_time_to_first_token_seconds_count{model="fake"}'] == 3
    assert samples['kangaroo_inter_token_latency_seconds_count{model="fake"}'] == 3
    assert samples['kangaroo_queue_time_seconds_count{model="fake"}'] == 3
    assert samples['kangaroo_e2e_request_latency_seconds_count{model="fake"}'] == 3
    assert samples["kangaroo_requests_running"] == 0
    assert samples["kangaroo_engine_ready"] == 1
    assert "kangaroo_kv_cache_usage_ratio" in samples
    assert "kangaroo_prefix_cache_hits_total" in samples


def test_usage_per_key_and_model_from_the_admin_api() -> None:
    settings = {"api_keys": "user-key", "admin_key": "admin-key"}
    with fake_client(FakeEngine(), **settings) as client:
        user = {"Authorization": "Bearer user-key"}
        replies = [
            client.post("/v1/chat/completions", json=HI | {"max_tokens": n}, headers=user)
            for n in (1, 2, 3)
        ]
        assert client.get("/v1/usage", headers=user).status_code == 403
        usage = client.get("/v1/usage", headers=ADMIN).json()
        bad = client.get("/v1/usage", params={"group_by": "colour"}, headers=ADMIN)
    assert bad.status_code == 400
    assert "colour" in bad.json()["error"]["message"]
    (row,) = usage["data"]
    assert row["model"] == "fake"
    assert row["mode"] == "live"
    assert row["key_id"].startswith("key-")
    assert row["requests"] == 3
    assert row["prompt_tokens"] == sum(r.json()["usage"]["prompt_tokens"] for r in replies)
    assert row["completion_tokens"] == sum(r.json()["usage"]["completion_tokens"] for r in replies)


def test_one_request_log_line_per_request_without_the_key(caplog) -> None:
    with (
        caplog.at_level(logging.INFO, logger="kangaroo.requests"),
        fake_client(FakeEngine(), api_keys="user-key") as client,
    ):
        caplog.clear()
        client.post(
            "/v1/chat/completions",
            json=HI | {"max_tokens": 2},
            headers={"Authorization": "Bearer user-key", "X-Request-ID": "req-42"},
        )
        client.get("/v1/models")  # no key: 401
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    assert [line["status"] for line in lines] == [200, 401]
    chat = lines[0]
    assert chat["request_id"] == "req-42"
    assert chat["key_id"].startswith("key-")
    assert chat["model"] == "fake"
    assert chat["completion_tokens"] == 2
    assert chat["outcome"] == "completed"
    assert {"prompt_tokens", "ttft_ms", "queue_ms", "duration_ms"} <= set(chat)
    assert lines[1]["error"] == "invalid_api_key"
    assert "user-key" not in caplog.text
