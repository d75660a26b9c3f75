"""How many batch lines this process keeps in the engine: live requests first.

vLLM's priority scheduling orders the engine's waiting queue (batch lines go in at a lower
priority than live requests) but never stops a running batch line for a waiting live one, and
every running sequence makes each engine step slower. So the runner feeds the engine itself,
through a window that follows the live load, the way TCP follows a network (AIMD):

- every `TICK_S` the window halves when live requests are under pressure (what counts as
  pressure is the caller's `Pressure`: ServerState.live_pressure);
- it grows when there was no pressure and the batch used its whole window: it doubles up to
  the size it had when pressure last halved it (slow start, so a batch on an idle server
  reaches full speed within a second or two), then grows by one line a tick; after
  `CALM_TICKS` without pressure (an idle server) it is `most` at once;
- it never drops below one line, so a batch always moves, and never exceeds `most`.

Besides, no new line starts while `clear` says a live request waits for its first token: its
prefill then shares the engine's steps with no batch prompt.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

TICK_S = 0.2
HOLD_TICKS = 5  # after pressure the window holds this many ticks (1 s) before it grows again
CALM_TICKS = 25  # ticks without pressure (5 s) after which slow start may reach `most` again
KV_CACHE_FULL = 0.9  # fraction of KV blocks in use that counts as pressure

# Why live requests are under pressure now, or None.
Pressure = Callable[[], str | None]


class Pacer:
    """The window of batch lines in the engine, adjusted every tick by `pressure`."""

    def __init__(
        self, most: int, pressure: Pressure, clear: Callable[[], Awaitable[object]] | None = None
    ):
        self.most = most
        self.window = 1
        self.threshold = most  # slow start below it: the window doubles instead of adding one
        self.in_flight = 0
        self._calm = 0  # ticks since the last pressure
        self._pressure = pressure
        self._clear = clear
        self._room = asyncio.Event()  # set when a place may have become free
        self._reason: str | None = None

    async def run_forever(self) -> None:
        """Adjust the window every tick."""
        while True:
            await asyncio.sleep(TICK_S)
            self.adjust()

    def adjust(self) -> None:
        """One AIMD step: halve on pressure, else grow if the window was full."""
        reason = self._pressure()
        self._calm = 0 if reason is not None else self._calm + 1
        if reason is not None:
            self.window = self.threshold = max(1, self.window // 2)
        elif self._calm >= CALM_TICKS:  # no live pressure for seconds: all of `most` at once
            self.window = self.threshold = self.most
            self._room.set()
        elif self.in_flight >= self.window and self._calm >= HOLD_TICKS:
            grown = self.window * 2 if self.window < self.threshold else self.window + 1
            self.window = min(self.most, grown)
            self._room.set()
        if reason != self._reason:
            logger.debug("Batch window %d: %s", self.window, reason or "no live pressure")
            self._reason = reason

    async def take(self) -> None:
        """Take a place in the window, waiting until there is one (and until `clear`)."""
        while True:
            while self.in_flight >= self.window:
                self._room.clear()
                await self._room.wait()
            if self._clear is not None:
                await self._clear()
            if self.in_flight < self.window:
                break
        self.in_flight += 1

    def give_back(self) -> None:
        """Give back a place taken with `take`."""
        self.in_flight -= 1
        self._room.set()
