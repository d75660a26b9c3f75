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
    }
