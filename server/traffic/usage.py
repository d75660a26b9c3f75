"""Usage per key, model, mode (live or batch) and UTC day, kept in SQLite across restarts.

Requests add their counts with `add`, which only appends them to a list: a writer thread wakes
once a second, sums what has piled up and writes it in one transaction, so the event loop never
waits for the disk, and no request wakes a thread (a woken thread takes the GIL from the event
loop for up to 5 ms). A crash loses at most the last second. Writes are increments
(`requests = requests + ?`), so several server processes on one machine may share the file.
"""

import datetime
import logging
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
    mode TEXT NOT NULL,
    requests INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, key_id, model, mode)
)
"""
# Files written before batch inference have no mode: all their usage was live. SQLite cannot
# change a primary key in place, so the table is copied.
MIGRATE_TO_MODES = """
ALTER TABLE usage RENAME TO usage_before_modes;
{schema};
INSERT INTO usage SELECT day, key_id, model, 'live', requests, prompt_tokens, completion_tokens
    FROM usage_before_modes;
DROP TABLE usage_before_modes;
"""
UPSERT = """
INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, key_id, model, mode) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens
"""
GROUPS = ("day", "key_id", "model", "mode")
WRITE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Use:
    """What one request used."""

    key_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    mode: str = "live"  # or "batch": batch lines are counted apart, to be priced apart


class UsageStore:
    """The usage table and the thread that writes it."""

    def __init__(self, path: Path):
        self.path = path
        self._pending: list[Use] = []
        self._flushed: list[threading.Event] = []  # flush() callers waiting for the writer
        self._lock = threading.Lock()  # guards the two lists
        self._wake = threading.Event()
        self._stopping = False
        self._writer: threading.Thread | None = None

    def start(self) -> None:
        """Create the file and table if needed, then start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            columns = [row[1] for row in db.execute("PRAGMA table_info(usage)")]
            if columns and "mode" not in columns:
                db.executescript(f"BEGIN; {MIGRATE_TO_MODES.format(schema=SCHEMA)} COMMIT;")
            db.execute(SCHEMA)
        self._writer = threading.Thread(target=self._write_loop, name="usage-writer", daemon=True)
        self._writer.start()

    def add(self, use: Use) -> None:
        """Count one request (never blocks, wakes nothing)."""
        with self._lock:
            self._pending.append(use)

    def flush(self) -> None:
        """Block until everything added so far is on disk."""
        if self._writer is None:
            return
        done = threading.Event()
        with self._lock:
            self._flushed.append(done)
        self._wake.set()
        done.wait()

    def report(
        self,
        group_by: tuple[str, ...] = ("key_id", "model"),
        start: datetime.date | None = None,
        end: datetime.date | None = None,
    ) -> list[dict[str, Any]]:
        """Totals per group (any of day, key_id, model, mode) over the days start..end
        (inclusive).

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
        """Write what is pending and stop the writer."""
        if self._writer is not None:
            self._stopping = True
            self._wake.set()
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
                self._wake.wait(WRITE_INTERVAL_S)
                self._wake.clear()
                stopping = self._stopping
                with self._lock:
                    batch, self._pending = self._pending, []
                    waiters, self._flushed = self._flushed, []
                if batch:
                    self._write(db, batch)
                for done in waiters:
                    done.set()
                if stopping:
                    return
        finally:
            db.close()

    def _write(self, db: sqlite3.Connection, batch: list[Use]) -> None:
        day = datetime.datetime.now(datetime.UTC).date().isoformat()
        totals: dict[tuple[str, str, str], list[int]] = {}
        for use in batch:
            sums = totals.setdefault((use.key_id, use.model, use.mode), [0, 0, 0])
            sums[0] += 1
            sums[1] += use.prompt_tokens
            sums[2] += use.completion_tokens
        rows = [(day, *group, *sums) for group, sums in totals.items()]
        try:
            with db:
                db.executemany(UPSERT, rows)
        except sqlite3.Error:
            logger.exception("Could not write usage to %s: %d requests lost", self.path, len(batch))


def _row(columns: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    requests, prompt, completion = row[len(columns) :]
    return {
        **dict(zip(columns, row, strict=False)),
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
