"""The soak script: RSS growth and its target, errors by kind, the request mix, the process
tree it measures, and a short run against a small stand-in server."""

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from scripts.loadgen import RequestRecord, client_session, stream_chat
from scripts.soak import (
    RssSample,
    SoakResult,
    listening_pid,
    meets_target,
    process_tree_rss,
    report_lines,
    request_bodies,
    rss_growth,
    soak,
    whole_chat,
    write_results,
)

MIB = 2**20


def _samples(*points: tuple[float, int]) -> list[RssSample]:
    return [RssSample(t, rss * MIB, {"1 python": rss * MIB}, 0, 0) for t, rss in points]


def test_growth_is_measured_from_the_end_of_the_warm_up() -> None:
    # Start-up and the first minute grow and shrink freely; from there on, +4.9 %.
    samples = _samples((0, 1000), (30, 2000), (60, 1000), (300, 1030), (600, 1049))
    assert rss_growth(samples, warmup_s=60) == pytest.approx(0.049)
    assert rss_growth(samples, warmup_s=0) == pytest.approx(0.049)
    assert rss_growth(_samples((0, 1000), (600, 900)), warmup_s=60) is None  # one sample after
    assert rss_growth(_samples((60, 1000), (600, 900)), warmup_s=60) == pytest.approx(-0.1)


def test_the_target_is_no_errors_and_a_measured_growth_under_five_percent() -> None:
    assert meets_target(0, 0.049)
    assert meets_target(0, -0.2)
    assert not meets_target(0, 0.05)
    assert not meets_target(1, 0.0)
    assert not meets_target(0, None)


def test_failures_are_counted_by_kind_and_tokens_only_when_ok() -> None:
    result = SoakResult("http://x", "m", 1, 1.0, 2, 60.0)
    result.add(RequestRecord(start=0, ok=True, output_tokens=7))
    result.add(RequestRecord(start=0, error="x", error_kind="429 rate_limit_exceeded"))
    result.add(RequestRecord(start=0, error="x", error_kind="429 rate_limit_exceeded"))
    result.add(RequestRecord(start=0, error="x", error_kind="stream cut short", output_tokens=3))
    assert result.requests == 4
    assert result.completion_tokens == 7
    assert result.errors == Counter({"429 rate_limit_exceeded": 2, "stream cut short": 1})
    assert not result.target_met


def test_requests_vary_and_repeat_with_the_seed() -> None:
    bodies = request_bodies("m", seed=3)
    drawn = [next(bodies) for _ in range(600)]
    streamed = sum(b["stream"] for b in drawn)
    assert 0.6 < streamed / len(drawn) < 0.73  # two in three
    assert all(("stream_options" in b) == b["stream"] for b in drawn)
    assert {b["max_tokens"] for b in drawn} == {1, 8, 32, 64, 128, 256}
    lengths = {len(b["messages"][0]["content"].split()) for b in drawn}
    assert {4, 16, 64, 256} <= lengths
    assert {b["ignore_eos"] for b in drawn} == {True, False}
    again = request_bodies("m", seed=3)
    assert [next(again) for _ in range(600)] == drawn


# A process holding `MIB_HELD` MiB (pages touched, so they count in its RSS) that prints
# "ready" once they are. `CHILD` is one of them with a grandchild of its own; it prints the
# grandchild's pid when both hold their memory.
MIB_HELD = 32
HOLD = (
    "import sys, time\n"
    f"data = bytearray({MIB_HELD} * 2**20)\n"
    "data[::4096] = b'x' * len(range(0, len(data), 4096))\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
CHILD = (
    "import subprocess, sys\n"
    f"grand = subprocess.Popen([sys.executable, '-c', {HOLD!r}], stdout=subprocess.PIPE)\n"
    "grand.stdout.readline()\n"
    f"exec({HOLD.replace('ready', 'GRAND')!r}.replace('GRAND', str(grand.pid)))\n"
)


def test_the_process_tree_is_measured_children_included() -> None:
    # A tree of its own (a child and a grandchild), measured from its root: the test process's
    # other children in a full run are none of its business.
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        by_process = process_tree_rss(psutil.Process(child.pid))
        rss = {int(name.split()[0]): value for name, value in by_process.items()}
        assert set(rss) == {child.pid, grandchild}
        assert all(value >= MIB_HELD * MIB for value in rss.values()), rss
    finally:
        for proc in psutil.Process(child.pid).children(recursive=True):
            proc.kill()
        child.kill()
        child.wait()


def test_the_process_listening_on_the_port_is_found() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert listening_pid(f"http://127.0.0.1:{port}") == os.getpid()


def test_report_and_results_files(tmp_path: Path) -> None:
    result = SoakResult("http://x", "m", 1, 10.0, 32, 60.0, requests=10, completion_tokens=99)
    result.samples = _samples((0, 900), (60, 1000), (600, 1010))
    result.seconds = 600
    text = "\n".join(report_lines(result))
    assert "| 600 | 1010 | 1 | 0 | 0 |" in text
    assert "+1.00%" in text
    assert "Target (0 errors, growth < 5%): met" in text
    write_results(result, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["growth"] == pytest.approx(0.01)
    assert data["target_met"] is True
    assert len(data["samples"]) == 3
    assert (tmp_path / "out" / "results.md").read_text() == text + "\n"


# A stand-in server: the message says how to answer; it notes the most requests in flight.
IN_FLIGHT = web.AppKey("in_flight", list[int])  # [now, most]


async def _chat(request: web.Request) -> web.StreamResponse:
    counts = request.app[IN_FLIGHT]
    counts[0] += 1
    counts[1] = max(counts)
    try:
        await asyncio.sleep(0.005)
        return await _answer(request)
    finally:
        counts[0] -= 1


async def _answer(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    say = body["messages"][0]["content"]
    if say == "limited":
        error = {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}
        return web.json_response({"error": error}, status=429)
    if say == "garbled":
        return web.Response(text="<html>", status=200)
    if not body["stream"]:
        return web.json_response({"usage": {"completion_tokens": 5}})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    if say == "cut":
        return response
    if say == "fails":
        error = {"message": "m", "type": "timeout_error", "code": "request_timeout"}
        await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
    else:
        usage = {"choices": [], "usage": {"completion_tokens": 3}}
        await response.write(f"data: {json.dumps(usage)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    return response


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "stand-in"}]})


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[str, list[int]]]:
    """The stand-in's URL and its [requests in flight, most in flight]."""
    app = web.Application()
    app[IN_FLIGHT] = [0, 0]
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", app[IN_FLIGHT]
    await runner.cleanup()


async def test_whole_and_streamed_answers_and_their_errors(stand_in) -> None:
    def body(say: str, stream: bool) -> dict:
        return {"model": "m", "messages": [{"role": "user", "content": say}], "stream": stream}

    api = f"{stand_in[0]}/v1"
    async with client_session("k") as session:
        whole = await whole_chat(session, api, body("hi", False))
        assert (whole.ok, whole.output_tokens) == (True, 5)
        streamed = await stream_chat(session, api, body("hi", True))
        assert (streamed.ok, streamed.output_tokens) == (True, 3)
        kinds = [
            (await whole_chat(session, api, body("limited", False))).error_kind,
            (await whole_chat(session, api, body("garbled", False))).error_kind,
            (await stream_chat(session, api, body("limited", True))).error_kind,
            (await stream_chat(session, api, body("cut", True))).error_kind,
            (await stream_chat(session, api, body("fails", True))).error_kind,
            (await whole_chat(session, "http://127.0.0.1:9/v1", body("hi", False))).error_kind,
        ]
    assert kinds == [
        "429 rate_limit_exceeded",
        "bad reply",
        "429 rate_limit_exceeded",
        "stream cut short",
        "stream error request_timeout",
        "ClientConnectorError",
    ]


async def test_a_short_soak_against_the_stand_in(stand_in) -> None:
    url, in_flight = stand_in
    result = await soak(
        url, "k", minutes=0.02, concurrency=4, pid=os.getpid(), sample_s=0.2, warmup_s=0
    )
    assert in_flight[1] == 4  # the concurrency asked for, never more
    assert result.model == "stand-in"
    assert result.requests > 20
    assert not result.errors
    assert result.completion_tokens >= 3 * result.requests
    assert len(result.samples) >= 5
    assert result.samples[-1].requests == result.requests  # the last sample is at the end
    assert result.growth is not None
