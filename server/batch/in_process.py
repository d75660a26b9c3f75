"""The server's app run inside this process for an offline batch: no HTTP server and no socket.

`serving(settings)` builds the same app as `python -m server` (without its stored-batch runner),
runs its lifespan, waits until the engine is ready and hands back `send`, which posts a body to
a route in-process (`call_route`): the same validation, tools, response formats, adapters and
error bodies as a live request. `answer` turns one input line into its result row. Used by the
local runner and by each Ray actor.
"""

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from server.api.inprocess import call_route
from server.app import create_app
from server.batch import lines
from server.batch.lines import Line
from server.contract import KangarooError
from server.settings import Settings
from server.state import ServerState
from server.traffic import request_log
from server.traffic.auth import ANONYMOUS_ID, Caller

Row = dict[str, Any]
Send = Callable[[str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]

READY_POLL_S = 0.1
# Refusals that pass: the engine's places were taken for longer than max_queue_wait_s (a line
# asking for n > 1 sequences waits for several). The line is sent again, not failed.
PASSING_CODES = ("queue_timeout", "server_overloaded")
# The engine is gone: no later line can be answered, and this one was not.
LOST_CODES = ("engine_dead", "engine_not_ready", "server_shutting_down")
RETRY_S = 0.5
# Lines beyond the engine's places wait in the engine's own queue, a quarter of its places
# more: it starts the next line in the very step one finishes (as vLLM's run_batch, which
# queues every line there), not a step later, after the answer came back through here.
BACKLOG = 0.25
# The offline run is the app's only caller: no rate limits (the anonymous caller would get
# the requests_per_minute / tokens_per_minute settings).
OFFLINE_CALLER = Caller(ANONYMOUS_ID, role=None)


class EngineLostError(KangarooError):
    """The engine failed to start or died: the run stops (exit code 1); --resume continues."""


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Send]:
    """The app with its engine started: `send(url, body)` answers as the live route does. The
    engine stops on exit."""
    failed = asyncio.Event()
    # One log line per request is the server's record; here the result files are.
    request_log.logger.setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kangaroo-batch-") as own:
        offline = _offline(settings, Path(own))
        app = create_app(offline, on_fatal_error=failed.set, in_process=True)
        async with app.router.lifespan_context(app):
            await _ready(app.state.kangaroo, failed)
            # Nobody else is served here: no place needs keeping free for a live request.
            app.state.kangaroo.traffic.admission.max_running = lines_in_flight(settings)

            async def send(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                if failed.is_set():
                    raise EngineLostError("The engine died; run again with --resume to go on.")
                return await call_route(app, OFFLINE_CALLER, url, body)

            yield send


def lines_in_flight(settings: Settings) -> int:
    """How many lines an engine takes at once offline: its places and a backlog."""
    return settings.max_num_seqs + max(1, int(settings.max_num_seqs * BACKLOG))


def _offline(settings: Settings, folder: Path) -> Settings:
    """`settings` with the server's stores (uploaded files, stored batches, usage per key) in
    `folder`, a throwaway one: an offline run never touches a server's state, and actors on a
    cluster never share an SQLite file on a network home."""
    return settings.model_copy(
        update={"data_dir": folder / "data", "usage_db": folder / "usage.sqlite3"}
    )


async def _ready(state: ServerState, failed: asyncio.Event) -> None:
    """Wait until the engine has started; `EngineLostError` if it cannot."""
    # The app offers no event for "ready", only the state the server's /ready reads.
    while state.engine is None:
        if failed.is_set() or state.engine_dead:
            raise EngineLostError("The engine failed to start; its error is logged above.")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(failed.wait(), READY_POLL_S)


async def answer(send: Send, line: Line) -> Row:
    """The result row of one line: the route's answer, sent again while the engine is full."""
    while True:
        status, body = await send(line.url, line.body)
        error = body.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if code in LOST_CODES:
            raise EngineLostError(
                f"The engine stopped answering ({status} {code}); run again with --resume."
            )
        if code not in PASSING_CODES:
            return lines.result(line.custom_id, status, body)
        await asyncio.sleep(RETRY_S)
