"""The HTTP server process: uvicorn, with a graceful drain on SIGTERM / SIGINT.

First signal: `/ready` and new requests answer 503 at once, requests in flight run on for up to
`drain_timeout_s` (streams to their end), the rest are then stopped with an error, the engine
shuts down and the process exits 0. A second signal exits at once (128 + signal number), and
kills the engine's processes.
"""

import asyncio
import logging
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

import psutil
import uvicorn

from server.state import ServerState

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining the app's requests before it stops listening."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state
        self.exit_code = 0
        self._signal: int | None = None
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Signal handler: the first asks for a drain, the second exits now.

        It runs between two bytecodes of the event loop's thread, so for a drain it only sets
        a flag, which the loop picks up on its next tick (every 0.1 s).
        """
        if self._signal is None:
            self._signal = sig
            return
        logger.warning("%s again: exiting now", signal.Signals(sig).name)
        exit_now(self.state, 128 + sig)

    def fail(self) -> None:
        """Stop with exit code 1 (the engine failed to start, or died)."""
        self.exit_code = 1
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's tick, which also starts the drain and ends the server after it."""
        if self._signal is not None and self._drain is None:
            timeout_s = self.state.settings.drain_timeout_s
            logger.info("%s: draining for up to %g s", signal.Signals(self._signal).name, timeout_s)
            self._drain = asyncio.create_task(self.state.drain(timeout_s))
        if self._drain is not None and self._drain.done():
            self.should_exit = True
        return await super().on_tick(counter)


def exit_now(state: ServerState, code: int) -> NoReturn:
    """Leave without waiting: write the usage counted so far, kill the engine's processes.

    For a second signal, and for a stop while the engine was still starting (the model load
    runs in a thread the interpreter would otherwise wait for). vLLM's own shutdown would give
    its processes seconds to exit.
    """
    state.traffic.usage.close()
    for child in psutil.Process().children(recursive=True):
        child.kill()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
