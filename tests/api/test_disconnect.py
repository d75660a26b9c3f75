"""A client that goes away stops its generation: engine requests are aborted, KV blocks freed."""

import asyncio
import time

import httpx

from tests.conftest import LONG, MODEL, RunningServer


def _assert_scheduler_idle(server: RunningServer) -> None:
    # Scheduler figures arrive with engine steps: one short request makes a fresh step.
    httpx.post(
        f"{server.url}/v1/completions",
        json={"model": MODEL, "prompt": "x", "max_tokens": 1},
        timeout=30,
    ).raise_for_status()
    engine = server.engine_load()
    assert engine["num_running_requests"] == 0, engine
    assert engine["num_waiting_requests"] == 0, engine
    assert engine["kv_cache_usage"] == 0.0, engine


async def test_dropped_streams_are_aborted(server: RunningServer) -> None:
    async def open_and_drop() -> int:
        # A client (a connection pool) per stream: httpcore 1.0.9's pool may close a connection
        # already handed to another waiting request when many of its streams close at once,
        # and that request then hangs until its read timeout (encode/httpcore#1110).
        body = LONG | {"stream": True}
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=60) as client,
            client.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= 5:
                    return seen  # leaving the block closes the connection mid-stream
        raise AssertionError("stream ended before it was dropped")

    assert await asyncio.gather(*(open_and_drop() for _ in range(20))) == [5] * 20
    # 20 × 1,500 tokens would take the CPU engine well over a minute; an abort takes moments.
    server.wait_engine_idle(within_s=10)
    _assert_scheduler_idle(server)


async def test_dropped_non_stream_requests_are_aborted(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        tasks = [
            asyncio.create_task(client.post("/v1/chat/completions", json=LONG)) for _ in range(5)
        ]
        await _until(lambda: server.engine_load()["num_unfinished_requests"] == 5, within_s=10)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    server.wait_engine_idle(within_s=10)
    _assert_scheduler_idle(server)


async def _until(condition, within_s: float) -> None:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within_s, "condition not reached"
        await asyncio.sleep(0.05)
