"""The bounded queue and deadlines on the real engine: overload, queue and request timeouts."""

import asyncio
import json
import time

import httpx

from tests.conftest import APP_KEY, LONG, MAX_RUNNING, MAX_WAITING, RunningServer, bearer


async def _post(http: httpx.AsyncClient, body: dict) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.post("/v1/chat/completions", json=body)
    return response, time.monotonic() - started


def test_overload_refuses_the_excess_at_once_and_serves_the_rest(prod: RunningServer) -> None:
    fired = 4 * (MAX_RUNNING + MAX_WAITING)
    body = LONG | {"max_tokens": 128}

    async def fire() -> list[tuple[httpx.Response, float]]:
        limits = httpx.Limits(max_connections=fired)
        async with httpx.AsyncClient(
            base_url=prod.url, headers=bearer(APP_KEY), timeout=120, limits=limits
        ) as http:
            return await asyncio.gather(*(_post(http, body) for _ in range(fired)))

    results = asyncio.run(fire())
    served = [r for r, _ in results if r.status_code == 200]
    refused = [(r, t) for r, t in results if r.status_code == 429]
    assert len(served) + len(refused) == fired, {r.status_code for r, _ in results}
    assert len(served) >= MAX_RUNNING + MAX_WAITING
    assert len(refused) >= fired // 2
    for response, seconds in refused:
        assert response.json()["error"]["code"] == "server_overloaded"
        assert int(response.headers["retry-after-ms"]) > 0
        assert seconds < 2.0  # at once, not after a wait
    assert all(r.json()["usage"]["completion_tokens"] == 128 for r in served)
    assert httpx.get(f"{prod.url}/ready").status_code == 200
    prod.wait_engine_idle(within_s=10)


def test_a_request_past_its_deadline_is_aborted_in_the_engine(prod: RunningServer) -> None:
    with httpx.Client(base_url=prod.url, headers=bearer(APP_KEY), timeout=60) as http:
        started = time.monotonic()
        whole = http.post("/v1/chat/completions", json=LONG, headers={"X-Request-Timeout": "0.5"})
        elapsed = time.monotonic() - started
        assert whole.status_code == 408, whole.text
        assert whole.json()["error"]["code"] == "request_timeout"
        assert elapsed < 3.0
        prod.wait_engine_idle(within_s=2)  # the engine dropped it: it is not generating on

        with http.stream(
            "POST",
            "/v1/chat/completions",
            json=LONG | {"stream": True},
            headers={"X-Request-Timeout": "0.5"},
        ) as stream:
            data = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
        assert stream.status_code == 200
        assert data[-1] == "[DONE]"
        assert json.loads(data[-2])["error"]["code"] == "request_timeout"
        texts = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[1:-2]]
        assert any(texts)  # it had started answering
        prod.wait_engine_idle(within_s=2)


def test_a_request_waiting_too_long_for_a_place_gets_408(prod: RunningServer) -> None:
    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(
            base_url=prod.url, headers=bearer(APP_KEY), timeout=60
        ) as http:
            hogs = [
                asyncio.create_task(http.post("/v1/chat/completions", json=LONG))
                for _ in range(MAX_RUNNING)
            ]
            await asyncio.sleep(0.5)
            late = await http.post(
                "/v1/chat/completions",
                json=LONG | {"max_tokens": 4},
                headers={"X-Queue-Timeout": "0.3"},
            )
            for hog in hogs:
                hog.cancel()  # the clients leave: the engine drops their requests
            await asyncio.gather(*hogs, return_exceptions=True)
            return late

    late = asyncio.run(scenario())
    assert late.status_code == 408, late.text
    assert late.json()["error"]["code"] == "queue_timeout"
    prod.wait_engine_idle(within_s=10)
