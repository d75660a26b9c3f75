"""How many batch lines this process keeps in the engine: live requests first.

vLLM's scheduler knows nothing of live and batch (its priority policy stalled a stream of
ours under aborts, tests/api/test_disconnect.py, so it stays off), and every running sequence
makes each engine step slower. So the runner feeds the engine itself,
through a window that follows the live load, the way TCP follows a network (AIMD):

- every `TICK_S` the window halves when live requests are under pressure (what counts as
  pressure is the caller's `Pressure`: ServerState.live_pressure);
- after `HOLD_TICKS` without pressure it grows by one line a tick, while the batch uses it
  all; after `CALM_TICKS` without pressure and without a live request arriving (no live
  traffic) it is `most` at once, as it is at the first tick on an idle server: a batch there
  runs at full speed at once;
- the first live request to arrive after such a quiet spell restarts the window from one
  line at once (TCP restarts from its initial window after idle), not at the next tick:
  a batch running wide makes every engine step an order of magnitude longer;
- it never drops below one line, so a batch always moves, and never exceeds `most`;
- when it shrinks below the lines in flight, the youngest of those (the least work lost) are
  **shed**: told to leave the engine now and run again once there is room. Without this, a
  batch running wide when live traffic comes back would keep every engine step long until
  its lines finished, seconds on a CPU; with it, the next tick ends that.

Between ticks, no batch line starts while a live request waits for its first token (the
caller's `Starting`): a line's start (its validation, prompt and prefill) would share the
event loop and the engine step with that first token. The hold is short (`START_HOLD_S` at
most per line), so a steady stream of live arrivals slows a batch but never stops it.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

TICK_S = 0.2
HOLD_TICKS = 5  # after pressure the window holds this many ticks (1 s) before it grows again
CALM_TICKS = 25  # ticks without pressure (5 s) after which slow start may reach `most` again
KV_CACHE_FULL = 0.9  # fraction of KV blocks in use that counts as pressure
START_HOLD_S = 0.05  # the longest a batch line's start waits for live first tokens
START_POLL_S = 0.002

# Why live requests are under pressure now, or None.
Pressure = Callable[[], str | None]
# Whether a live request waits for its first token now.
Starting = Callable[[], bool]


@dataclass(eq=False)
class Place:
    """A batch line's place in the window; `shed` is set when the line must leave."""

    shed: asyncio.Event = field(default_factory=asyncio.Event)


class Pacer:
    """The window of batch lines in the engine, adjusted every tick by `pressure`."""

    def __init__(self, most: int, pressure: Pressure, starting: Starting = lambda: False):
        self.most = most
        self.window = 1  # until the first tick has looked at the live load
        self.in_flight = 0
        self._places: list[Place] = []  # in the order taken: the youngest last
        self._calm = CALM_TICKS  # ticks since the last pressure
        self._quiet = CALM_TICKS  # ticks since a live request last arrived
        self._pressure = pressure
        self._starting = starting
        self._room = asyncio.Event()  # set when a place may have become free
        self._reason: str | None = None

    async def run_forever(self) -> None:
        """Adjust the window every tick."""
        while True:
            await asyncio.sleep(TICK_S)
            self.adjust()

    def adjust(self) -> None:
        """One step: halve on pressure; grow after a while without."""
        reason = self._pressure()
        self._calm = 0 if reason is not None else self._calm + 1
        self._quiet += 1
        if reason is not None:
            self.window = max(1, self.window // 2)
        elif min(self._calm, self._quiet) >= CALM_TICKS:
            self.window = self.most
        elif self._calm >= HOLD_TICKS and self.in_flight >= self.window:
            self.window = min(self.most, self.window + 1)
        self._shed_beyond_window()
        self._room.set()
        if reason != self._reason:
            logger.debug("Batch window %d: %s", self.window, reason or "no live pressure")
            self._reason = reason

    def live_arrived(self) -> None:
        """A live request arrived: after a quiet spell the window restarts from one line."""
        if self._quiet >= CALM_TICKS:
            self.window = 1
            self._calm = 0  # hold, then grow a line a tick, as after pressure
            self._shed_beyond_window()
        self._quiet = 0

    def _shed_beyond_window(self) -> None:
        staying = [place for place in self._places if not place.shed.is_set()]
        for place in staying[self.window :]:
            place.shed.set()

    async def take(self) -> Place:
        """Take a place in the window, waiting until there is one and no live request waits
        for its first token (that for `START_HOLD_S` at most)."""
        held_until = time.monotonic() + START_HOLD_S
        while True:
            while self.in_flight >= self.window:
                self._room.clear()
                await self._room.wait()
            if not self._starting() or time.monotonic() >= held_until:
                break
            await asyncio.sleep(START_POLL_S)
        self.in_flight += 1
        place = Place()
        self._places.append(place)
        return place

    def give_back(self, place: Place) -> None:
        """Give back a place taken with `take`."""
        self.in_flight -= 1
        self._places.remove(place)
        self._room.set()
