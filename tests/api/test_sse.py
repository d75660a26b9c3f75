"""Exact SSE framing of streamed responses, read as raw HTTP from the real server."""

import json
import time

import httpx
import pytest

from tests.conftest import HEARTBEAT_S, MODEL


def _events(http: httpx.Client, path: str, body: dict) -> tuple[list[str], httpx.Response]:
    with http.stream("POST", path, json=body) as r:
        lines = list(r.iter_lines())
    return lines, r


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_every_data_line_parses_and_order_is_role_content_finish_usage_done(
    http: httpx.Client, path: str
) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 8,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    body |= (
        {"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "hi"}
    )
    lines, r = _events(http, path, body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    # Nothing but data lines, blank separators and heartbeat comments.
    assert all(line == "" or line.startswith(("data: ", ":")) for line in lines)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    kinds = [_kind(c) for c in chunks]
    if "chat" in path:
        assert kinds[0] == "role"
        kinds = kinds[1:]
    assert kinds == ["content"] * (len(kinds) - 2) + ["finish", "usage"]
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    assert len({c["id"] for c in chunks}) == 1


def _kind(chunk: dict) -> str:
    if not chunk["choices"]:
        return "usage"
    choice = chunk["choices"][0]
    if choice["finish_reason"]:
        return "finish"
    if choice.get("delta", {}).get("role"):
        return "role"
    return "content"


def test_heartbeat_comments_keep_a_long_stream_alive(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1800,  # a few seconds on a fast CPU: room for several heartbeats
        "stream": True,
        "ignore_eos": True,
    }
    started = time.monotonic()
    lines, _ = _events(http, "/v1/chat/completions", body)
    elapsed = time.monotonic() - started
    pings = [line for line in lines if line.startswith(":")]
    assert elapsed > 2 * HEARTBEAT_S, "stream too short to expect a heartbeat"
    assert len(pings) >= 1
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
