"""The batch pacer: the window of batch lines halves under live pressure, grows back only when
it was used (one line a tick, after a hold; all at once on an idle server), stays within
1..most, and the runner never exceeds it."""

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.batch import pacing
from server.batch.jobs import Batch
from server.batch.pacing import CALM_TICKS, HOLD_TICKS, Pacer
from server.batch.runner import BatchRunner
from tests.batch.stored import stored_batch


class Switch:
    """A pressure signal a test turns on and off."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> str | None:
        return self.reason


def test_the_window_halves_under_pressure_and_grows_back_when_used() -> None:
    pressure = Switch()
    pacer = Pacer(32, pressure)
    assert pacer.window == 1
    pacer.adjust()
    assert pacer.window == 32  # an idle server: the whole window from the first tick

    def ticks(count: int, in_use: bool = True) -> list[int]:
        windows = []
        for _ in range(count):
            pacer.in_flight = pacer.window if in_use else 0
            pacer.adjust()
            windows.append(pacer.window)
        return windows

    pressure.reason = "live requests wait"
    assert ticks(3) == [16, 8, 4]
    pressure.reason = None
    held = [4] * (HOLD_TICKS - 1)
    assert ticks(HOLD_TICKS + 1) == [*held, 5, 6]  # held a while, then one line a tick
    assert ticks(2, in_use=False) == [6, 6]  # an unused window does not grow
    pressure.reason = "live requests wait"
    assert ticks(5) == [3, 1, 1, 1, 1]  # never less than one: a batch always moves
    pressure.reason = None
    calm = ticks(CALM_TICKS)
    assert calm[HOLD_TICKS - 1 : HOLD_TICKS + 2] == [2, 3, 4]
    assert calm[-1] == 32  # calm long enough: all of `most` at once


def test_take_waits_for_a_place_in_the_window() -> None:
    async def scenario() -> list[str]:
        pacer = Pacer(2, lambda: None)
        events: list[str] = []
        first = await pacer.take()

        async def second() -> None:
            await pacer.take()
            events.append("second took")

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0)
        events.append("first gives back")
        pacer.give_back(first)
        await waiting
        return events

    assert asyncio.run(scenario()) == ["first gives back", "second took"]


def test_a_shrinking_window_sheds_the_youngest_lines_beyond_it() -> None:
    async def scenario() -> list[bool]:
        pressure = Switch()
        pacer = Pacer(8, pressure)
        pacer.adjust()  # idle: the whole window
        places = [await pacer.take() for _ in range(8)]
        pressure.reason = "live requests wait"
        pacer.adjust()  # 8 -> 4: the four youngest must leave
        pacer.adjust()  # 4 -> 2: two more, not the four already leaving
        return [place.shed.is_set() for place in places]

    assert asyncio.run(scenario()) == [False, False, True, True, True, True, True, True]


def test_a_live_arrival_after_a_quiet_spell_restarts_the_window_at_once() -> None:
    async def scenario() -> tuple[int, list[bool], int]:
        pacer = Pacer(64, Switch())
        pacer.adjust()  # idle: the whole window
        places = [await pacer.take() for _ in range(8)]
        pacer.live_arrived()  # no tick needed: one line now, the seven youngest shed
        restarted = pacer.window
        for _ in range(2 * CALM_TICKS):  # no pressure, but live requests keep arriving
            pacer.in_flight = pacer.window
            pacer.adjust()
            pacer.live_arrived()
        return restarted, [p.shed.is_set() for p in places], pacer.window

    restarted, shed, window = asyncio.run(scenario())
    assert restarted == 1
    assert shed == [False] + [True] * 7
    assert 1 < window < 64  # grown a line a tick, never all of `most` while live requests come


def test_no_line_starts_while_a_live_request_waits_for_its_first_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pacing, "START_HOLD_S", 600.0)  # the hold never runs out here
    live_waits = True

    async def scenario() -> tuple[bool, int]:
        nonlocal live_waits
        pacer = Pacer(4, lambda: None, lambda: live_waits)
        take = asyncio.create_task(pacer.take())
        for _ in range(5):  # the pacer looks again at each poll
            await asyncio.sleep(pacing.START_POLL_S)
        held = not take.done()
        live_waits = False  # the first token came
        await take
        return held, pacer.in_flight

    assert asyncio.run(scenario()) == (True, 1)


def test_a_line_starts_after_the_hold_while_live_requests_keep_coming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pacing, "START_HOLD_S", 0.0)
    pacer = Pacer(4, lambda: None, lambda: True)  # some live request always waits
    asyncio.run(asyncio.wait_for(pacer.take(), 60))
    assert pacer.in_flight == 1


def test_the_runner_keeps_its_lines_within_the_window(tmp_path: Path) -> None:
    files, batches, batch = stored_batch(tmp_path, 12)
    running = most = 0

    async def execute(
        owner: str, url: str, body: dict[str, Any], gone: asyncio.Event
    ) -> tuple[int, dict]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return 200, {"id": "cmpl-1", "usage": {}}

    async def run() -> str:
        pressure = Switch()
        pressure.reason = "live requests wait"  # all along: the window stays at one line
        runner = BatchRunner(batches, files, execute, Pacer(4, pressure), max_lines=100)
        task = asyncio.create_task(runner.run_forever())
        for _ in range(1000):
            if batches.get(batch.id, None).status in ("completed", "failed"):
                break
            await asyncio.sleep(0.02)
        await runner.stop()
        task.cancel()
        return batches.get(batch.id, None).status

    assert asyncio.run(run()) == "completed"
    assert most == 1


def test_shed_lines_leave_the_engine_and_run_again_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "TICK_S", 600.0)  # the test moves the window itself
    files, batches, batch = stored_batch(tmp_path, 8)
    attempts: list[str] = []
    running: set[str] = set()

    async def run() -> Batch:
        released = asyncio.Event()

        async def execute(
            owner: str, url: str, body: dict[str, Any], gone: asyncio.Event
        ) -> tuple[int, dict]:
            attempts.append(body["prompt"])
            running.add(body["prompt"])
            waits = [asyncio.ensure_future(e.wait()) for e in (released, gone)]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            running.discard(body["prompt"])
            if not released.is_set():
                return 499, {}  # as the route answers a client that went away
            return 200, {"id": "cmpl-1", "usage": {}}

        pressure = Switch()
        pacer = Pacer(4, pressure)
        pacer.adjust()  # an idle server: four lines at once
        runner = BatchRunner(batches, files, execute, pacer, max_lines=100)
        task = asyncio.create_task(runner.run_forever())
        await _until(lambda: len(running) == 4)
        pressure.reason = "live requests wait"
        pacer.adjust()  # 4 -> 2: the two youngest leave
        await _until(lambda: len(running) == 2)
        released.set()
        await _until(lambda: batches.get(batch.id, None).status == "completed")
        await runner.stop()
        task.cancel()
        return batches.get(batch.id, None)

    done = asyncio.run(asyncio.wait_for(run(), 60))
    rows = files.path(files.get(done.output_file_id, None)).read_text().splitlines()
    assert sorted(json.loads(row)["custom_id"] for row in rows) == [f"r{i}" for i in range(8)]
    twice = sorted(prompt for prompt in set(attempts) if attempts.count(prompt) == 2)
    assert twice == sorted(attempts[2:4])  # the two youngest of the first four, run again
    assert len(attempts) == 10  # and every other line once


async def _until(happened: Callable[[], bool]) -> None:
    for _ in range(3000):
        if happened():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("it never happened")
