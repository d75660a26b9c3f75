"""How many batch lines this process keeps in the engine: live requests first.

vLLM's priority scheduling orders the engine's waiting queue (batch lines go in at a lower
priority than live requests) but never stops a running batch line for a waiting live one, and
every running sequence makes each engine step slower. So the runner feeds the engine itself,
through a window that follows the live load, the way TCP follows a network (AIMD):

- every `TICK_S` the window halves when live requests are under pressure: waiting for a place
  in the admission queue, waiting in the engine's queue, or the KV cache nearly full;
- it grows by one when there was no pressure and the batch used its whole window;
- it never drops below one line, so a batch always moves, and never exceeds `most`.
"""

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

TICK_S = 0.2
KV_CACHE_FULL = 0.9  # fraction of KV blocks in use that counts as pressure

# Why live requests are under pressure now, or None.
Pressure = Callable[[], str | None]


class Pacer:
    """The window of batch lines in the engine, adjusted every tick by `pressure`."""

    def __init__(self, most: int, pressure: Pressure):
        self.most = most
        self.window = 1
        self.in_flight = 0
        self._pressure = pressure
        self._room = asyncio.Event()  # set when a place may have become free
        self._reason: str | None = None

    async def run_forever(self) -> None:
        """Adjust the window every tick."""
        while True:
            await asyncio.sleep(TICK_S)
            self.adjust()

    def adjust(self) -> None:
        """One AIMD step: halve on pressure, else grow by one if the window was full."""
        reason = self._pressure()
        if reason is not None:
            self.window = max(1, self.window // 2)
        elif self.in_flight >= self.window:
            self.window = min(self.most, self.window + 1)
            self._room.set()
        if reason != self._reason:
            logger.debug("Batch window %d: %s", self.window, reason or "no live pressure")
            self._reason = reason

    async def take(self) -> None:
        """Take a place in the window, waiting until there is one."""
        while self.in_flight >= self.window:
            self._room.clear()
            await self._room.wait()
        self.in_flight += 1

    def give_back(self) -> None:
        """Give back a place taken with `take`."""
        self.in_flight -= 1
        self._room.set()
