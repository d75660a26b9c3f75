"""A fake engine behind the `Engine` seam, for fast tests of the HTTP layer alone."""

import asyncio
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from server.app import create_app
from server.engine.generation import (
    AdapterRef,
    ChoiceDelta,
    EngineStats,
    SamplingOptions,
    TokenLogprob,
    ToolCallDelta,
)
from server.errors import EngineFailedError
from server.settings import load_settings


class FakeEngine:
    """Replies with the words of `script`, one delta per word; may fail after `fail_after`."""

    model_path = "/fake/model"
    max_model_len = 64
    vocab_size = 100

    def __init__(
        self,
        script: str = "one two three",
        fail_after: int | None = None,
        crash: Exception | None = None,
    ) -> None:
        self.script = script.split(" ")
        self.fail_after = fail_after
        self.crash = crash or EngineFailedError("the fake engine failed")
        self.is_shut_down = False
        self.adapters: list[AdapterRef] = []
        self.removed_adapters: list[int] = []
        self.aborted: set[str] = set()
        self.alive = True
        self.delay_s = 0.0  # between words, to let a test act mid-generation
        # Cleared, every generation waits before its first word until the test sets it again:
        # a request holds its place exactly as long as a test needs, however slow the machine.
        self.released = threading.Event()
        self.released.set()
        self.checked: list[SamplingOptions] = []  # options given to `check`
        self.tool_call: tuple[str, str] | None = None  # (name, arguments) to call when offered

    def render_chat(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> str:
        offered = "".join(f"<tool>{t['function']['name']}" for t in tools or ())
        return offered + "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def check(self, options: SamplingOptions) -> None:
        self.checked.append(options)

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(ch) % self.vocab_size for ch in text]

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        options: SamplingOptions,
        adapter: AdapterRef | None = None,
    ) -> AsyncIterator[list[ChoiceDelta]]:
        # Polled, not waited for in a worker thread: held generations would take every thread
        # of the default pool, and the app's own to_thread calls would queue behind them.
        while not self.released.is_set():  # noqa: ASYNC110 (a threading.Event, set by the test)
            await asyncio.sleep(0.005)
        tools = options.tools
        if self.tool_call is not None and tools is not None and tools.choice != "none":
            for batch in self._tool_call_deltas(options.n):
                await asyncio.sleep(self.delay_s)
                yield batch
            return
        words = self.script[: options.max_tokens]
        for i, word in enumerate(words):
            if self.fail_after is not None and i == self.fail_after:
                raise self.crash
            await asyncio.sleep(self.delay_s)
            if request_id in self.aborted:
                yield [ChoiceDelta(c, "", (), None, "abort") for c in range(options.n)]
                return
            text = word if i == 0 else " " + word
            if adapter is not None and i == 0:
                text = f"[{adapter.name}] {text}"  # an adapter visibly changes the output
            last = i == len(words) - 1
            finish = ("length" if len(words) == options.max_tokens else "stop") if last else None
            logprobs = None
            if options.logprobs is not None:
                logprobs = (TokenLogprob(text, -0.5, ()),)
            yield [
                ChoiceDelta(c, text, (i,), logprobs, finish_reason=finish) for c in range(options.n)
            ]

    def _tool_call_deltas(self, n: int) -> Iterator[list[ChoiceDelta]]:
        """`tool_call` as the engine streams it: id and name, then arguments in three pieces."""
        assert self.tool_call is not None
        name, arguments = self.tool_call
        third = max(1, len(arguments) // 3)
        pieces = [arguments[:third], arguments[third : 2 * third], arguments[2 * third :]]
        deltas = [ToolCallDelta(0, "call_fake", name, "")]
        deltas += [ToolCallDelta(0, None, None, piece) for piece in pieces]
        for i, delta in enumerate(deltas):
            finish = "stop" if i == len(deltas) - 1 else None
            yield [ChoiceDelta(c, "", (i,), None, finish, (delta,)) for c in range(n)]

    async def abort(self, request_ids: list[str]) -> None:
        self.aborted.update(request_ids)

    async def load_adapter(self, adapter: AdapterRef) -> None:
        self.adapters.append(adapter)

    async def remove_adapter(self, lora_id: int) -> None:
        self.removed_adapters.append(lora_id)

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 0, 0.0)

    def is_alive(self) -> bool:
        return self.alive

    def shutdown(self, wait: bool = True) -> None:
        self.is_shut_down = True


class CountingEngine(FakeEngine):
    """A fake engine that records the most requests it generated for at once."""

    def __init__(self) -> None:
        super().__init__()
        self.delay_s = 0.02
        self.now = self.most = 0

    async def generate(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            async for deltas in super().generate(*args, **kwargs):
                yield deltas
        finally:
            self.now -= 1


@contextmanager
def fake_client(
    engine: FakeEngine | None = None,
    on_fatal_error: Callable[[], None] = lambda: None,
    **settings: Any,
) -> Iterator[TestClient]:
    """The app on `engine` (a new `FakeEngine` by default), started and with its engine ready.

    `settings` override the defaults; the usage store and the data folder are this app's own,
    in a temporary folder.
    """
    fake = engine or FakeEngine()
    with tempfile.TemporaryDirectory() as folder:
        values: dict[str, Any] = {
            "model": "fake-org/fake",
            "served_model_name": "fake",
            "sse_heartbeat_s": 0,
            "usage_db": Path(folder) / "usage.sqlite3",
            "data_dir": Path(folder) / "data",
        }
        app = create_app(load_settings(**values | settings), lambda s, p: fake, on_fatal_error)
        with TestClient(app, raise_server_exceptions=False) as client:
            state = app.state.kangaroo
            # Read from the state, not /ready: that route may need a key.
            for _ in range(500):
                if state.engine is not None:
                    break
                time.sleep(0.01)
            yield client
