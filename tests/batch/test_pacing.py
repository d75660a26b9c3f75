"""The batch pacer: the window of batch lines halves under live pressure, grows by one only
when it was used, stays within 1..most, and the runner never exceeds it."""

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

from server.batch.files import FileStore
from server.batch.jobs import Batch, BatchStore, new_batch_id
from server.batch.pacing import Pacer
from server.batch.runner import BatchRunner


class Switch:
    """A pressure signal a test turns on and off."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __call__(self) -> str | None:
        return self.reason


def test_the_window_grows_when_used_and_halves_under_pressure() -> None:
    pressure = Switch()
    pacer = Pacer(8, pressure)
    pacer.adjust()
    assert pacer.window == 1  # nothing in flight: an unused window does not grow
    pacer.in_flight = 1
    for expected in (2, 3, 4):
        pacer.in_flight = pacer.window
        pacer.adjust()
        assert pacer.window == expected
    for _ in range(10):
        pacer.in_flight = pacer.window
        pacer.adjust()
    assert pacer.window == 8  # never more than `most`
    pressure.reason = "live requests wait"
    windows = []
    for _ in range(5):
        pacer.adjust()
        windows.append(pacer.window)
    assert windows == [4, 2, 1, 1, 1]  # never less than one: a batch always moves


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
