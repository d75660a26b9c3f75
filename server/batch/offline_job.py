"""An offline batch job's files: the input read one line at a time and checked as the Batch API
checks it, what a resumed run skips, and the result rows appended durably to the output and
error files.

A line is answered exactly once across interrupted runs: a resumed run skips every custom_id
whose answer is in either file, and every refused input line (bad JSON, a duplicate custom_id)
whose error row, which names its line number, is already there. A half-written last row (a
crash mid-append) is cut off and that line run again.
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from server.batch import lines
from server.batch.lines import BadLine, Line
from server.batch.tally import is_ok
from server.contract import KangarooError

Row = dict[str, Any]
HELD_ROWS = 1024  # most rows of refused lines kept waiting for the next write


class UsageError(KangarooError):
    """The job cannot start as asked (exit code 2); the message says why."""


@dataclass(frozen=True)
class Job:
    """Where a job reads and writes, and whether it continues an earlier run."""

    input: Path
    output: Path
    errors: Path
    resume: bool = False

    def check(self) -> None:
        """`UsageError` unless the input exists and the results may be written where asked."""
        if not self.input.is_file():
            raise UsageError(f"The input file '{self.input}' does not exist.")
        paths = {self.input.resolve(), self.output.resolve(), self.errors.resolve()}
        if len(paths) < 3:
            raise UsageError("The input, output and error files must be three different files.")
        if self.resume:
            return
        for path in (self.output, self.errors):
            if path.exists():
                raise UsageError(
                    f"'{path}' already exists: pass --resume to continue the run that wrote "
                    "it, or write somewhere else."
                )


@dataclass
class Written:
    """What earlier runs of the job wrote (nothing for a new job)."""

    ids: set[str] = field(default_factory=set)  # custom_ids of the lines run
    refused_lines: set[int] = field(default_factory=set)  # input lines refused before running


def already_written(job: Job, count: Callable[[Row], None]) -> Written:
    """Read the output and error files (cutting a half-written last row); `count` sees each
    row, for the summary."""
    written = Written()
    for path in (job.output, job.errors):
        for row in lines.written(path):
            line = (row.get("error") or {}).get("line")
            if line is not None:
                written.refused_lines.add(line)
            else:
                written.ids.add(row["custom_id"])
            count(row)
    return written


def count_lines(path: Path) -> int:
    """Non-blank lines of `path`: the progress bar's total (one streaming pass)."""
    with path.open("rb") as source:
        return sum(1 for raw in source if raw.strip())


def to_run(path: Path, written: Written, refuse: Callable[[Row], None]) -> Iterator[Line]:
    """The lines of `path` still to run, in file order, read one at a time.

    A line the Batch API would refuse, or one repeating an earlier line's custom_id, is not
    run: `refuse` gets its error row (unless an earlier run wrote it). The custom_ids seen are
    kept (to find repeats); the lines are not.
    """
    seen: set[str] = set()
    for item, custom_id in _read(path):
        if isinstance(item, BadLine):
            if item.number not in written.refused_lines:
                refuse(refused(item.number, custom_id, item.code, item.message))
        elif item.custom_id in seen:
            if item.number not in written.refused_lines:
                message = f"The custom_id {item.custom_id!r} is used by an earlier line."
                refuse(refused(item.number, item.custom_id, "duplicate_custom_id", message))
        else:
            seen.add(item.custom_id)
            if item.custom_id not in written.ids:
                yield item


def _read(path: Path) -> Iterator[tuple[Line | BadLine, str | None]]:
    """Each non-blank line parsed, with its custom_id when one can be read (a bad line's too)."""
    with path.open("rb") as source:
        for number, raw in enumerate(source, start=1):
            if raw.strip():
                item = lines.parse(number, raw, endpoint=None)  # either endpoint per line
                yield item, item.custom_id if isinstance(item, Line) else _custom_id(raw)


def _custom_id(raw: bytes) -> str | None:
    """The custom_id of a line that is not a valid request, if it has a readable one."""
    try:
        item = json.loads(raw)
    except ValueError:
        return None
    custom_id = item.get("custom_id") if isinstance(item, dict) else None
    return custom_id if isinstance(custom_id, str) else None


def refused(number: int, custom_id: str | None, code: str, message: str) -> Row:
    """The error row of an input line that is not run: OpenAI's shape, plus the line number
    (in the message, and as `error.line`, which a resumed run recognises it by)."""
    row = lines.not_run("", code, f"Line {number}: {message}")
    row["custom_id"] = custom_id
    row["error"]["line"] = number
    return row


class Results:
    """The output and error files, open for appending, and the rows waiting to be written.

    Each file is made when its first row is written: a run whose engine never started leaves
    none behind (so the next run needs no --resume). `finish` makes the output file of a job
    that ended with no answer at all.
    """

    def __init__(self, job: Job, on_written: Callable[[list[Row]], None]):
        self.job = job
        self.on_written = on_written  # sees each row once it is on disk (the tally)
        self._files: dict[Path, IO[str]] = {}
        self._held: list[Row] = []

    def hold(self, row: Row) -> None:
        """Write `row` with the next `write`, or now once `HELD_ROWS` are waiting (a long run
        of refused input lines between two answers)."""
        self._held.append(row)
        if len(self._held) >= HELD_ROWS:
            self.write([])

    def write(self, rows: list[Row]) -> None:
        """Append the held rows and `rows`: answers to the output file, the rest to the error
        file; on disk when this returns. Rows that finish together are written together, one
        fsync per file."""
        rows = [*self._held, *rows]
        self._held.clear()
        ok = [row for row in rows if is_ok(row)]
        failed = [row for row in rows if not is_ok(row)]
        for path, part in ((self.job.output, ok), (self.job.errors, failed)):
            if part:
                lines.append(self._file(path), part)
        if rows:
            self.on_written(rows)

    def _file(self, path: Path) -> IO[str]:
        if path not in self._files:
            self._files[path] = path.open("a", encoding="utf-8")
        return self._files[path]

    def finish(self) -> None:
        """The job ran to its end: write what is held, and make sure the output file exists."""
        self.write([])
        self._file(self.job.output)

    def close(self) -> None:
        """Write what is held; close the files."""
        try:
            self.write([])
        finally:
            for file in self._files.values():
                file.close()

    def __enter__(self) -> "Results":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
