"""/health and /ready on the real server."""

import httpx

from tests.conftest import RunningServer


def test_health_is_ok(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}


def test_ready_was_503_while_the_engine_loaded(server: RunningServer) -> None:
    # The fixture polled /ready from the moment the port opened until the engine was up.
    assert server.ready_statuses[0] == 503
    assert server.ready_statuses[-1] == 200


def test_ready_reports_engine_load(http: httpx.Client) -> None:
    body = http.get("/ready").json()
    assert body["status"] == "ready"
    assert set(body["engine"]) == {
        "num_unfinished_requests",
        "num_running_requests",
        "num_waiting_requests",
        "kv_cache_usage",
        "prefix_cache_queries",
        "prefix_cache_hits",
    }


def test_request_id_comes_back_on_streams_and_errors(http) -> None:
    body = {
        "model": "kangaroo-demo",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    with http.stream(
        "POST", "/v1/chat/completions", json=body, headers={"X-Request-ID": "r-1"}
    ) as r:
        assert r.headers["x-request-id"] == "r-1"
        assert any(line == "data: [DONE]" for line in r.iter_lines())
    missing = http.post("/v1/chat/completions", json=body | {"model": "nope"})
    assert missing.status_code == 404
    assert len(missing.headers["x-request-id"]) == 32
