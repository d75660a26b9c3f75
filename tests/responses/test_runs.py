"""A run goes on apart from its clients: a background one whatever happens to them, a
foreground one while a follower is there or comes back within the grace time."""

import asyncio
from typing import Any

from server.responses.runs import Run, entries


def _run(grace_s: float, background: bool = False) -> Run:
    return Run({"id": "resp_x", "status": "in_progress"}, "key", None, grace_s, background)


def _event(seq: int, kind: str = "response.output_text.delta") -> dict[str, Any]:
    return {"type": kind, "sequence_number": seq}


async def _generate(run: Run, release: asyncio.Event) -> None:
    """Two events, then waits for `release`, then ends (or is cancelled on the way)."""
    try:
        run.add([_event(0, "response.created"), _event(1)])
        await release.wait()
        closing = [_event(2, "response.completed")]
    except asyncio.CancelledError:
        closing = [_event(2, "response.cancelled")]
    await run.close(entries(closing))


async def _last_type(run: Run) -> str:
    await run.finished()
    return run.events[-1][1]


async def test_a_foreground_run_whose_follower_left_is_cancelled_after_the_grace_time() -> None:
    run, release = _run(grace_s=0.01), asyncio.Event()
    run.start(_generate(run, release))
    follower = run.follow(-1)
    assert [kind async for _, kind, _ in _take(follower, 2)] == [
        "response.created",
        "response.output_text.delta",
    ]
    await follower.aclose()  # the client dropped
    assert await _last_type(run) == "response.cancelled"


async def test_a_follower_that_comes_back_in_time_keeps_the_run() -> None:
    run, release = _run(grace_s=60), asyncio.Event()
    run.start(_generate(run, release))
    first = run.follow(-1)
    await anext(first)
    await first.aclose()
    second = run.follow(0)  # resumes after sequence number 0
    release.set()
    assert [kind async for _, kind, _ in second] == [
        "response.output_text.delta",
        "response.completed",
    ]
    assert await _last_type(run) == "response.completed"


async def test_a_background_run_never_waits_for_a_follower() -> None:
    run, release = _run(grace_s=0, background=True), asyncio.Event()
    run.start(_generate(run, release))
    await asyncio.sleep(0.05)  # far past the grace time, with nobody following
    release.set()
    assert await _last_type(run) == "response.completed"


async def test_cancel_ends_the_run_with_response_cancelled() -> None:
    run, release = _run(grace_s=60), asyncio.Event()
    run.start(_generate(run, release))
    with run.watched():
        await asyncio.sleep(0)
        run.cancel()
        assert await _last_type(run) == "response.cancelled"
    assert [seq for seq, _, _ in run.events] == [0, 1, 2]


async def _take(follower: Any, n: int) -> Any:
    for _ in range(n):
        yield await anext(follower)
