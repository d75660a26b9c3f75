"""The offline batch runner on this machine: one engine in this process, at most `concurrency`
lines in flight, each result appended (and on disk) as it finishes.

The input is read as lines are sent, in windows that group lines sharing a prefix
(`lines.grouped`), so memory stays bounded however long the file: what is held is the lines in
flight, one window, and the custom_ids seen.
"""

import asyncio
import sys
from collections.abc import Iterator
from itertools import chain

from server.batch.in_process import EngineLostError, Row, Send, answer, serving
from server.batch.lines import Line, grouped
from server.batch.offline_job import Job, Results, already_written, count_lines, to_run
from server.batch.tally import Tally
from server.settings import Settings


def run_local(job: Job, settings: Settings, concurrency: int) -> int:
    """Run `job` on an engine in this process; the exit code: 0 when every line succeeded, 1
    when any line failed or the engine was lost (the summary says which)."""
    tally = Tally(count_lines(job.input))
    written = already_written(job, tally.resumed)
    try:
        with Results(job, tally.add) as results:
            pending = grouped(to_run(job.input, written, results.hold))
            first = next(pending, None)
            if first is not None:  # else nothing is left to run (a finished job resumed)
                flight = Flight(results, concurrency)
                asyncio.run(_run(settings, flight, chain([first], pending), tally))
            results.finish()
    except EngineLostError as exc:
        tally.close_bar()
        print(f"kangaroo batch: {exc}", file=sys.stderr)
        return 1
    finally:
        tally.close_bar()
        print(tally.summary(), file=sys.stderr)
    return tally.exit_code()


async def _run(settings: Settings, flight: "Flight", pending: Iterator[Line], tally: Tally) -> None:
    async with serving(settings) as send:
        tally.open_bar()
        await flight.run(send, pending)
        tally.close_bar()  # before the engine stops, which takes seconds


class Flight:
    """The lines in flight; each row is written as its line finishes."""

    def __init__(self, results: Results, concurrency: int):
        self.results, self.concurrency = results, concurrency

    async def run(self, send: Send, pending: Iterator[Line]) -> None:
        """Send every line of `pending`, `concurrency` at a time; write each row as it comes.

        An `EngineLostError` stops the run: rows already answered are written first, lines in
        flight are abandoned (a resumed run sends them again).
        """
        tasks: set[asyncio.Task[Row]] = set()
        try:
            for line in pending:
                if len(tasks) >= self.concurrency:
                    tasks = await self._settle(tasks)
                tasks.add(asyncio.create_task(answer(send, line)))
            while tasks:
                tasks = await self._settle(tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _settle(self, tasks: set[asyncio.Task[Row]]) -> set[asyncio.Task[Row]]:
        """Wait for at least one line to finish and write what finished; the lines left."""
        done, left = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        rows = [task.result() for task in done if task.exception() is None]
        # In a worker thread: the engine's other lines go on meanwhile (fsync takes time).
        await asyncio.to_thread(self.results.write, rows)
        for task in done:
            if (error := task.exception()) is not None:
                raise error
        return left
