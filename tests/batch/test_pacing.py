"""The batch pacer: the window of batch lines halves under live pressure, grows only when it
was used (doubling at first, then one line a tick), stays within 1..most, and the runner never
exceeds it."""

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

from server.batch.files import FileStore
from server.batch.jobs import Batch, BatchStore, new_batch_id
from server.batch.pacing import CALM_TICKS, Pacer
from server.batch.runner import BatchRunner


class Switch:
    """A pressure signal a test turns on and off."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> str | None:
        return self.reason


def test_the_window_grows_when_used_and_halves_under_pressure() -> None:
    pressure = Switch()
    pacer = Pacer(32, pressure)

    def ticks(count: int) -> list[int]:
        windows = []
        for _ in range(count):
            pacer.in_flight = pacer.window  # the batch uses its whole window
            pacer.adjust()
            windows.append(pacer.window)
        return windows

    pacer.adjust()
    assert pacer.window == 1  # nothing in flight: an unused window does not grow
    assert ticks(6) == [2, 4, 8, 16, 32, 32]  # slow start, up to `most`
    pressure.reason = "live requests wait"
    assert ticks(3) == [16, 8, 4]
    pressure.reason = None
    assert ticks(3) == [5, 6, 7]  # past pressure: one line a tick, from half where it was
    pressure.reason = "live requests wait"
    assert ticks(5) == [3, 1, 1, 1, 1]  # never less than one: a batch always moves
    pressure.reason = None
    calm = ticks(CALM_TICKS + 1)
    assert calm[:3] == [2, 3, 4]
    # calm long enough: slow start again, up to `most`
    assert calm[-3:] == [CALM_TICKS, 32, 32]


def test_take_waits_for_a_place_in_the_window() -> None:
    async def scenario() -> list[str]:
        pacer = Pacer(2, lambda: None)
        events: list[str] = []
        await pacer.take()

        async def second() -> None:
            await pacer.take()
            events.append("second took")

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0)
        events.append("first gives back")
        pacer.give_back()
        await waiting
        return events

    assert asyncio.run(scenario()) == ["first gives back", "second took"]


def test_the_runner_keeps_its_lines_within_the_window(tmp_path: Path) -> None:
    files, batches = FileStore(tmp_path, 2**20), BatchStore(tmp_path)
    data = b"".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
                    "body": {"model": "m", "prompt": f"p{i}"}}).encode() + b"\n"
        for i in range(12)
    )  # fmt: skip
    upload = files.save(io.BytesIO(data), "in.jsonl", "batch", "k")
    now = int(time.time())
    batch = Batch(new_batch_id(), "k", "/v1/completions", upload.id, "24h", now, now + 3600)
    batches.create(batch, None)
    running = most = 0

    async def execute(owner: str, url: str, body: dict[str, Any]) -> tuple[int, dict]:
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


def test_no_line_starts_while_a_live_request_waits_for_its_first_token() -> None:
    async def scenario() -> list[str]:
        clear = asyncio.Event()
        pacer = Pacer(4, lambda: None, clear.wait)
        pacer.window = 4
        events: list[str] = []

        async def line() -> None:
            await pacer.take()
            events.append("line started")

        starting = asyncio.create_task(line())
        await asyncio.sleep(0)
        events.append("live request answered")
        clear.set()
        await starting
        return events

    assert asyncio.run(scenario()) == ["live request answered", "line started"]
