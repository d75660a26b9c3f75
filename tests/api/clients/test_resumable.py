"""Resumable chat streams on the real engine: a dropped connection picked up where it stopped
with no second generation, the Stop, the grace time, and the official clients (Python and
Node) reading opted-in and plain streams with heartbeats on."""

import json
import time
from typing import Any

import httpx
import openai

from finetune.demo.skills import GREETING_REPLY
from tests.api.clients.node import run_node
from tests.conftest import HEARTBEAT_S, LONG, MODEL, RunningServer

RESUMABLE = {"X-Resumable": "true"}
# Greedy and long enough (about 1-2 s) to carry several heartbeats.
STREAM = LONG | {"stream": True, "temperature": 0, "max_tokens": 1000}


def _read(response: httpx.Response, until: int | None = None) -> list[tuple[int, str]]:
    """(id, data) of the events read, stopping after `until` of them."""
    events: list[tuple[int, str]] = []
    event_id = None
    for line in response.iter_lines():
        if line.startswith("id: "):
            event_id = int(line[len("id: ") :])
        elif line.startswith("data: "):
            assert event_id is not None, "an event without its id"
            events.append((event_id, line[len("data: ") :]))
            if until is not None and len(events) == until:
                break
    return events


def _text(events: list[tuple[int, str]]) -> str:
    chunks = [json.loads(data) for _, data in events if data != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def _requests_counted(server: RunningServer) -> int:
    rows = httpx.get(f"{server.url}/v1/usage", timeout=10).json()["data"]
    return sum(row["requests"] for row in rows)


def _tokens_counted(server: RunningServer) -> int:
    rows = httpx.get(f"{server.url}/v1/usage", timeout=10).json()["data"]
    return sum(row["completion_tokens"] for row in rows)


def _plain_text(server: RunningServer, body: dict[str, Any]) -> str:
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    return _text([(i, data) for i, data in enumerate(lines)])


def test_a_dropped_stream_resumes_after_its_last_event_id(server: RunningServer) -> None:
    expected = _plain_text(server, STREAM)
    before = _requests_counted(server)
    url = f"{server.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=STREAM, headers=RESUMABLE, timeout=60) as r:
        stream_id = r.headers["x-resumable-id"]
        seen = _read(r, until=5)  # then the connection drops, mid-answer
    assert [i for i, _ in seen] == list(range(5))
    resume = f"{url}/{stream_id}/stream"
    with httpx.stream("GET", resume, headers={"Last-Event-ID": "4"}, timeout=60) as r:
        rest = _read(r)
    assert [i for i, _ in rest] == list(range(5, 5 + len(rest)))
    assert rest[-1][1] == "[DONE]"
    assert _text(seen + rest) == expected
    assert _requests_counted(server) == before + 1  # generated and counted once


def test_the_stop_cancels_a_resumable_stream(server: RunningServer) -> None:
    url = f"{server.url}/v1/chat/completions"
    body = LONG | {"stream": True}
    with httpx.stream("POST", url, json=body, headers=RESUMABLE, timeout=60) as r:
        stream_id = r.headers["x-resumable-id"]
        _read(r, until=2)
    stopped = httpx.post(f"{url}/{stream_id}/cancel", timeout=30).json()
    assert stopped == {"id": stream_id, "object": "chat.completion.stream", "status": "cancelled"}
    server.wait_engine_idle(within_s=10)
    with httpx.stream("GET", f"{url}/{stream_id}/stream", timeout=30) as r:
        events = _read(r)
    assert json.loads(events[-2][1])["error"]["code"] == "cancelled"
    assert events[-1][1] == "[DONE]"


def test_a_stream_nobody_resumes_is_cancelled_after_the_grace_time(server: RunningServer) -> None:
    url = f"{server.url}/v1/chat/completions"
    body = LONG | {"stream": True, "max_tokens": 2000}
    before = _tokens_counted(server)
    started = time.monotonic()
    with httpx.stream("POST", url, json=body, headers=RESUMABLE, timeout=60) as r:
        _read(r, until=2)
    server.wait_engine_idle(within_s=30)  # the session server's grace time is 2 s
    print(f"dropped stream ended after {time.monotonic() - started:.1f} s")
    assert _tokens_counted(server) - before < 2000  # stopped, not generated to its end


def test_the_python_client_reads_opted_in_streams_with_heartbeats(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    extra = {"ignore_eos": True}
    params = {"model": MODEL, "messages": LONG["messages"], "temperature": 0, "max_tokens": 1000}
    started = time.monotonic()
    stream = client.chat.completions.create(
        **params, stream=True, extra_headers=RESUMABLE, extra_body=extra
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert time.monotonic() - started > 2 * HEARTBEAT_S  # long enough to carry heartbeats
    assert text == _plain_text(server, STREAM)
    # The heartbeats are there, as bare comment lines: no blank line, so no empty event.
    with httpx.stream(
        "POST", f"{server.url}/v1/chat/completions", json=STREAM, headers=RESUMABLE, timeout=60
    ) as r:
        raw = "".join(r.iter_text())
    assert ": ping\n" in raw
    assert ": ping\n\n" not in raw


def test_the_node_client_reads_opted_in_and_plain_streams(server: RunningServer) -> None:
    run = run_node("streams.mjs", f"{server.url}/v1", MODEL)
    assert run["plain"]["text"] == run["resumable"]["text"]  # the chunking follows the timing
    assert min(run["plain"]["chunks"], run["resumable"]["chunks"]) > 10
    assert run["responses"] == {"text": GREETING_REPLY, "last": "response.completed"}
