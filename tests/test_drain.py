"""The server process's end: a graceful drain on SIGTERM, and an exit when the engine dies.

Each test starts its own server (the process ends in the test).
"""

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import LONG as BASE_LONG
from tests.conftest import RunningServer, running_server

FAST_START = ["--enforce-eager", "--kv-cache-gib", "1", "--max-model-len", "2048"]
LONG = BASE_LONG | {"stream": True}


class Stream(threading.Thread):
    """A streamed chat request read to its end in the background."""

    def __init__(self, url: str, body: dict):
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.events: list = []
        self.first_token = threading.Event()
        self.cut = False  # the connection closed before the stream's end

    def run(self) -> None:
        url = f"{self.url}/v1/chat/completions"
        try:
            with httpx.stream("POST", url, json=self.body, timeout=120) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        data = line[6:]
                        self.events.append(data if data == "[DONE]" else json.loads(data))
                        if len(self.events) > 2:
                            self.first_token.set()
        except httpx.TransportError:
            self.cut = True

    def finish_reason(self) -> str | None:
        """The stream's finish reason, or None if it did not finish."""
        reasons = [e["choices"][0]["finish_reason"] for e in self.events[:-1] if e.get("choices")]
        return next((r for r in reasons if r), None)


@pytest.fixture
def own_server(tmp_path: Path):
    """A server of the test's own (the test ends its process)."""
    with running_server(tmp_path, FAST_START) as running:
        yield running


def test_sigterm_drains_running_streams_then_exits_0(own_server: RunningServer) -> None:
    streams = [Stream(own_server.url, LONG) for _ in range(3)]
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.first_token.wait(60)
    own_server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the drain starts at uvicorn's next tick (0.1 s)

    ready = httpx.get(f"{own_server.url}/ready", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "server_shutting_down"
    refused = httpx.post(f"{own_server.url}/v1/chat/completions", json=LONG, timeout=10)
    assert refused.status_code == 503
    assert all(stream.is_alive() for stream in streams), "the streams ended before the check"

    for stream in streams:
        stream.join(120)
        assert stream.events[-1] == "[DONE]"
        assert stream.finish_reason() == "length"  # every stream ran to its end
    assert own_server.process.wait(timeout=60) == 0
    assert "Draining: 3 request(s) in flight" in own_server.log()


def test_a_second_signal_exits_at_once_and_takes_the_engine_along(
    own_server: RunningServer,
) -> None:
    stream = Stream(own_server.url, LONG | {"max_tokens": 2000})
    stream.start()
    assert stream.first_token.wait(60)
    children = psutil.Process(own_server.process.pid).children(recursive=True)
    own_server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    own_server.process.send_signal(signal.SIGTERM)
    assert own_server.process.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 10
    stream.join(30)
    assert stream.cut  # cut off, not drained
    assert stream.finish_reason() is None
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]  # no orphaned engine processes


def test_a_dead_engine_fails_requests_with_503_and_the_process_exits_1(
    own_server: RunningServer,
) -> None:
    stream = Stream(own_server.url, LONG)
    stream.start()
    assert stream.first_token.wait(60)
    children = psutil.Process(own_server.process.pid).children(recursive=True)
    (engine_core,) = [p for p in children if "EngineCore" in " ".join(p.cmdline()) + p.name()]
    engine_core.kill()

    seen: list[tuple[int, str]] = []
    while own_server.process.poll() is None and len(seen) < 200:
        try:
            r = httpx.get(f"{own_server.url}/ready", timeout=5)
            seen.append((r.status_code, r.json().get("error", {}).get("code", "")))
        except httpx.TransportError:
            break
        time.sleep(0.02)
    assert (503, "engine_dead") in seen, seen[-5:]
    stream.join(30)
    assert stream.events[-1] == "[DONE]"
    assert stream.events[-2]["error"]["code"] == "engine_dead"
    assert own_server.process.wait(timeout=60) == 1
    assert "The engine died" in own_server.log()
