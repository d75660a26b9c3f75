"""Runs batches: validates the input file, sends each line through the live route, appends each
result to a work file, and at the end turns the work files into the output and error files.

Exactly once: a line's result is appended (and flushed to disk) as soon as it is known, and a
batch that resumes (after a restart, a crash, or on another process once the lease ran out)
skips every custom_id already written; a line in flight when the process died is run again,
since its result was never written. A half-written last line (a crash mid-append) is cut off.
Lines are read from the file as they are sent (never all held), grouped by model and first
message within a window (lines.grouped), so that the prefix cache and LoRA slots are reused; how
many run at once follows the live load (pacing.Pacer). A line refused for a reason that passes
(429, 503) is retried later, not failed; a line the pacer sheds (it leaves the engine as a
client that went away) runs again once the window has room.
"""

import asyncio
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import IO, Any

from server.batch import lines as batch_lines
from server.batch.files import FileStore
from server.batch.jobs import OPEN, Batch, BatchStore
from server.batch.lines import BadLine, Line
from server.batch.pacing import Pacer, Place
from server.errors import NotFoundError, ShuttingDownError

logger = logging.getLogger(__name__)

# (owner key id, url, body, gone) -> (HTTP status, JSON body) of the live route; setting
# `gone` stops the line as a client that went away (499).
Execute = Callable[[str, str, dict[str, Any], asyncio.Event], Awaitable[tuple[int, dict[str, Any]]]]
RETRY_STATUSES = (408, 429, 503)
SHED = 499  # the line left the engine for live requests (the pacer shed it): it runs again
STATUS_TTL_S = 0.5
LEASE_S = 15.0  # another process takes over a batch this long after its runner died
POLL_S = 1.0
RETRY_S = 1.0


class BatchRunner:
    """Claims open batches and runs them, as many lines at a time as `pacer` allows."""

    def __init__(
        self,
        batches: BatchStore,
        files: FileStore,
        execute: Execute,
        pacer: Pacer,
        max_lines: int,
    ):
        self.batches, self.files, self.execute = batches, files, execute
        self.pacer = pacer
        self.max_lines = max_lines
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this process, in leases
        self.work = files.root / "batches"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._draining = False  # the server drains: no new line starts here
        self._status: dict[str, tuple[float, bool]] = {}  # batch id -> (checked at, goes on)

    async def run_forever(self) -> None:
        """Claim and run batches until `stop`; renews the leases of those it runs."""
        pacing = asyncio.create_task(self.pacer.run_forever())
        try:
            while not self._stopping:
                # Draining, it keeps the leases of the batches whose lines still finish here
                # (lest another replica run those lines too) and takes no other.
                claim = partial(self.batches.claim, self.name, LEASE_S, only_own=self._draining)
                for batch in await asyncio.to_thread(claim):
                    if batch.id not in self._running and not self._draining:
                        task = asyncio.create_task(self._run(batch.id))
                        self._running[batch.id] = task
                        task.add_done_callback(partial(self._forget, batch.id))
                await asyncio.sleep(POLL_S)
        finally:
            pacing.cancel()

    def _forget(self, batch_id: str, _: object) -> None:
        self._running.pop(batch_id, None)
        self._status.pop(batch_id, None)

    async def stop(self) -> None:
        """Start no new line; lines in flight finish, or are run again by whoever resumes."""
        self._stopping = True
        running = dict(self._running)  # the tasks forget themselves as they end
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        for batch_id in running:
            self.batches.release(batch_id, self.name)  # another process may resume it now

    async def _run(self, batch_id: str) -> None:
        try:
            batch = self.batches.get(batch_id, None)
            if batch.status == "validating":
                batch = await asyncio.to_thread(self._validate, batch)
            if batch.status in ("in_progress", "cancelling", "finalizing"):
                ending = await self._run_lines(batch)
                if ending is not None:
                    await asyncio.to_thread(self._finalize, batch, ending)
            self.batches.release(batch_id, self.name)
        except asyncio.CancelledError:
            raise
        except NotFoundError as exc:  # its input file was deleted: it cannot go on
            await asyncio.to_thread(self._fail, batch_id, exc)
        except Exception:
            logger.exception("Batch %s stopped by an error; it resumes at the next claim", batch_id)

    def _fail(self, batch_id: str, exc: NotFoundError) -> None:
        """End a batch whose input file is gone; the lines it finished are kept."""
        error = {"code": "input_file_missing", "message": exc.message, "param": "input_file_id",
                 "line": None}  # fmt: skip

        def failed(stored: Batch) -> Batch:
            stored.errors = [error]
            return stored

        batch = self.batches.update(batch_id, failed)
        self._finalize(batch, "failed")
        self.batches.release(batch_id, self.name)

    def _validate(self, batch: Batch) -> Batch:
        total, errors = validate(self._input(batch), batch.endpoint, self.max_lines)

        def validated(stored: Batch) -> Batch:
            if stored.status != "validating":
                return stored  # cancelled meanwhile
            if errors:
                stored = stored.moved("failed")
                stored.errors = errors
                return stored
            stored = stored.moved("in_progress")
            stored.counts = {"total": total, "completed": 0, "failed": 0}
            return stored

        return self.batches.update(batch.id, validated)

    def _input(self, batch: Batch) -> Path:
        """The batch's input file (NotFoundError once it was deleted)."""
        return self.files.path(self.files.get(batch.input_file_id, None))

    async def _run_lines(self, batch: Batch) -> str | None:
        """Run every line not written yet; the status the batch ends in (None: this process
        drains, and the batch is left to whoever resumes it).

        The disk is read and written in worker threads: an fsync on the event loop would
        stall every live stream of the process.
        """
        folder = self.work / batch.id
        pending = await asyncio.to_thread(self._resume, batch, folder)
        results = _Results()
        with (
            (folder / "output.jsonl").open("a", encoding="utf-8") as output,
            (folder / "errors.jsonl").open("a", encoding="utf-8") as errors,
        ):
            async with asyncio.TaskGroup() as lines:
                async for line in _in_threads(pending):
                    place = await self.pacer.take()
                    if self._draining or not await self._goes_on(batch.id):
                        self.pacer.give_back(place)
                        break
                    task = self._run_line(batch, line, place, (output, errors), results)
                    lines.create_task(task)
            if self._draining:
                return None
            return await asyncio.to_thread(self._ending, batch, errors)

    def _resume(self, batch: Batch, folder: Path) -> Iterator[Line]:
        """The lines left to run; when resuming, the counts are made what was written."""
        folder.mkdir(parents=True, exist_ok=True)
        done = batch_lines.written_ids(folder / "output.jsonl", folder / "errors.jsonl")
        if done:  # a crash may have come between a line's append and its count
            self.batches.update(batch.id, partial(_tally, folder))
        return _pending(self._input(batch), batch.endpoint, done)

    def _ending(self, batch: Batch, errors: IO[str]) -> str:
        """How a batch whose lines all ran (or were stopped) ends."""
        stored = self.batches.get(batch.id, None)
        if stored.status == "cancelling":
            return "cancelled"
        if time.time() >= stored.expires_at and self._write_expired(batch, errors):
            return "expired"
        self.batches.update(
            batch.id, lambda b: b.moved("finalizing") if b.status == "in_progress" else b
        )
        return "completed"

    async def _goes_on(self, batch_id: str) -> bool:
        """Whether the batch still runs lines: not cancelled and within its window (read from
        the store at most every `STATUS_TTL_S`: a cancel is seen that late)."""
        checked_at, goes_on = self._status.get(batch_id, (-STATUS_TTL_S, True))
        if time.monotonic() - checked_at >= STATUS_TTL_S:
            batch = await asyncio.to_thread(self.batches.get, batch_id, None)
            goes_on = batch.status == "in_progress" and time.time() < batch.expires_at
            self._status[batch_id] = time.monotonic(), goes_on
        return goes_on

    async def _run_line(
        self,
        batch: Batch,
        line: Line,
        place: Place | None,
        files: tuple[IO[str], IO[str]],
        results: "_Results",
    ) -> None:
        """Run one line (holding `place` in the pacer's window, given back here) and record it."""
        try:
            while True:
                if place is None:  # shed: it waits for room again, like a new line
                    place = await self.pacer.take()
                execute = self.execute(batch.owner, batch.endpoint, line.body, place.shed)
                status, body = await execute
                if (body.get("error") or {}).get("code") == ShuttingDownError.code:
                    # This process drains: the line stays unwritten, and runs again where the
                    # batch resumes (here after a restart, or on another replica).
                    self._draining = True
                    return
                if status == SHED and place.shed.is_set():
                    self.pacer.give_back(place)
                    place = None
                elif status not in RETRY_STATUSES:
                    break
                if not await self._goes_on(batch.id):
                    return  # cancelled or expired meanwhile: the line never ran
                if place is not None:
                    await asyncio.sleep(RETRY_S)
        finally:
            if place is not None:
                self.pacer.give_back(place)
        results.pending.append((status, batch_lines.result(line.custom_id, status, body)))
        # Group commit: whoever holds the lock writes every result waiting, in one fsync per
        # file and one update of the batch; lines that finish meanwhile go in the next round.
        async with results.writing:
            if results.pending:
                rows, results.pending = results.pending, []
                await asyncio.to_thread(self._record, batch.id, rows, files)

    def _record(
        self, batch_id: str, rows: list[tuple[int, dict[str, Any]]], files: tuple[IO[str], ...]
    ) -> None:
        """Append results (durably) and count them in the batch."""
        output, errors = files
        batch_lines.append(output, [row for status, row in rows if status == 200])
        batch_lines.append(errors, [row for status, row in rows if status != 200])

        def counted(stored: Batch) -> Batch:
            for status, row in rows:
                stored.counts["completed" if status == 200 else "failed"] += 1
                _add_usage(stored, batch_lines.usage_of(row))
            return stored

        self.batches.update(batch_id, counted)

    def _write_expired(self, batch: Batch, errors: IO[str]) -> bool:
        """An error line `batch_expired` for every line not run; whether there was one."""
        folder = self.work / batch.id
        done = batch_lines.written_ids(folder / "output.jsonl", folder / "errors.jsonl")
        message = "This request could not be executed before the completion window expired."
        left = False
        for line in _pending(self._input(batch), batch.endpoint, done):
            row = batch_lines.not_run(line.custom_id, "batch_expired", message)
            batch_lines.append(errors, [row])
            left = True
        return left

    def _finalize(self, batch: Batch, ending: str) -> None:
        """Turn the work files into the output and error files, and end the batch in `ending`.

        The files' ids come from the batch's: done twice (a crash in between), it stores them
        once.
        """
        folder = self.work / batch.id
        ids: dict[str, str] = {}
        for name, attribute in (
            ("output.jsonl", "output_file_id"),
            ("errors.jsonl", "error_file_id"),
        ):
            path = folder / name
            if path.is_file() and path.stat().st_size > 0:
                file_id = f"file-{hashlib.sha256((batch.id + name).encode()).hexdigest()[:24]}"
                with path.open("rb") as source:
                    self.files.save(
                        source, f"{batch.id}_{name}", "batch_output", batch.owner, file_id
                    )
                ids[attribute] = file_id

        def ended(stored: Batch) -> Batch:
            if stored.status not in OPEN:
                return stored
            for attribute, file_id in ids.items():
                setattr(stored, attribute, file_id)
            return stored.moved(ending)

        self.batches.update(batch.id, ended)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class _Results:
    """Results of a running batch waiting to be written, and the lock of whoever writes them."""

    pending: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)


def validate(path: Path, endpoint: str, max_lines: int) -> tuple[int, list[dict[str, Any]]]:
    """The number of requests in the input file at `path`, and its validation errors (each
    with its line), read as a stream."""
    total = 0
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for line in batch_lines.read(path, endpoint):
        if line.number > max_lines:
            message = f"A batch takes at most {max_lines:,} lines (setting batch_max_lines)."
            errors.append(BadLine(line.number, "too_many_lines", message).error())
            break
        if isinstance(line, BadLine):
            errors.append(line.error())
        elif line.custom_id in seen:
            message = f"The custom_id {line.custom_id!r} is used by an earlier line."
            errors.append(BadLine(line.number, "duplicate_custom_id", message, "custom_id").error())
        else:
            seen.add(line.custom_id)
            total += 1
    if not total and not errors:
        errors.append(BadLine(1, "empty_file", "The input file has no requests.").error())
    return total, errors


async def _in_threads(lines: Iterator[Line], chunk: int = 256) -> AsyncIterator[Line]:
    """`lines`, read `chunk` at a time in a worker thread (they come from a file)."""
    while part := await asyncio.to_thread(lambda: list(islice(lines, chunk))):
        for line in part:
            yield line


def _pending(path: Path, endpoint: str, done: set[str]) -> Iterator[Line]:
    """The lines of a validated input file not in `done`, grouped by shared prefix."""
    lines = batch_lines.read(path, endpoint)
    return batch_lines.grouped(x for x in lines if isinstance(x, Line) and x.custom_id not in done)


def _tally(folder: Path, batch: Batch) -> Batch:
    """`batch` with its counts and usage recomputed from the results written in `folder`."""
    batch.counts.update(completed=0, failed=0)
    batch.usage = dict.fromkeys(batch.usage, 0)
    for name, key in (("output.jsonl", "completed"), ("errors.jsonl", "failed")):
        for row in batch_lines.written(folder / name):
            batch.counts[key] += 1
            _add_usage(batch, batch_lines.usage_of(row))
    return batch


def _add_usage(batch: Batch, usage: dict[str, int]) -> None:
    batch.usage["input_tokens"] += usage.get("prompt_tokens", 0)
    batch.usage["output_tokens"] += usage.get("completion_tokens", 0)
    batch.usage["total_tokens"] += usage.get("total_tokens", 0)
