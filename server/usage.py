"""Usage per key, model and UTC day, kept in SQLite across restarts.

Requests add their counts with `add`, which only puts them on a queue: a writer thread sums
what has queued up and writes it in one transaction, so the event loop never waits for the disk.
Writes are increments (`requests = requests + ?`), so several server processes on one machine
may share the file.
"""

import datetime
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, key_id, model)
)
"""
UPSERT = """
INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (day, key_id, model) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens
"""
GROUPS = ("day", "key_id", "model")


@dataclass(frozen=True)
class Use:
    """What one request used."""

    key_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class UsageStore:
    """The usage table and the thread that writes it."""

    def __init__(self, path: Path):
        self.path = path
        self._queue: queue.Queue[Use | threading.Event | None] = queue.Queue()
        self._writer: threading.Thread | None = None

    def start(self) -> None:
        """Create the file and table if needed, then start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
        self._writer = threading.Thread(target=self._write_loop, name="usage-writer", daemon=True)
        self._writer.start()

    def add(self, use: Use) -> None:
        """Count one request (never blocks)."""
        self._queue.put_nowait(use)

    def flush(self) -> None:
        """Block until everything added so far is on disk."""
        if self._writer is None:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def report(
        self,
        group_by: tuple[str, ...] = ("key_id", "model"),
        start: datetime.date | None = None,
        end: datetime.date | None = None,
    ) -> list[dict[str, Any]]:
        """Totals per group (any of day, key_id, model) over the days start..end (inclusive).

        Blocks on the disk: call it from a worker thread.
        """
        self.flush()
        columns = [g for g in GROUPS if g in group_by]
        select = ", ".join(
            [*columns, "SUM(requests)", "SUM(prompt_tokens)", "SUM(completion_tokens)"]
        )
        sql = f"SELECT {select} FROM usage WHERE day >= ? AND day <= ?"
        if columns:
            sql += f" GROUP BY {', '.join(columns)} ORDER BY {', '.join(columns)}"
        bounds = (str(start or datetime.date.min), str(end or datetime.date.max))
        with self._connect() as db:
            rows = db.execute(sql, bounds).fetchall()
        return [_row(columns, row) for row in rows if row[len(columns)] is not None]

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 30000")
        return db

    def _write_loop(self) -> None:
        db = self._connect()
        try:
            while True:
                item = self._queue.get()
                batch, waiters, stop = _drain(item, self._queue)
                if batch:
                    self._write(db, batch)
                for done in waiters:
                    done.set()
                if stop:
                    return
        finally:
            db.close()

    def _write(self, db: sqlite3.Connection, batch: list[Use]) -> None:
        day = datetime.datetime.now(datetime.UTC).date().isoformat()
        totals: dict[tuple[str, str], list[int]] = {}
        for use in batch:
            sums = totals.setdefault((use.key_id, use.model), [0, 0, 0])
            sums[0] += 1
            sums[1] += use.prompt_tokens
            sums[2] += use.completion_tokens
        rows = [(day, key_id, model, *sums) for (key_id, model), sums in totals.items()]
        try:
            with db:
                db.executemany(UPSERT, rows)
        except sqlite3.Error:
            logger.exception("Could not write usage to %s: %d requests lost", self.path, len(batch))


def _drain(
    first: Use | threading.Event | None, pending: "queue.Queue[Use | threading.Event | None]"
) -> tuple[list[Use], list[threading.Event], bool]:
    """`first` and everything queued behind it, sorted into uses, flush waiters and stop."""
    batch: list[Use] = []
    waiters: list[threading.Event] = []
    stop = False
    item: Use | threading.Event | None = first
    while True:
        if item is None:
            stop = True
        elif isinstance(item, threading.Event):
            waiters.append(item)
        else:
            batch.append(item)
        try:
            item = pending.get_nowait()
        except queue.Empty:
            return batch, waiters, stop


def _row(columns: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    requests, prompt, completion = row[len(columns) :]
    return {
        **dict(zip(columns, row, strict=False)),
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
