"""Batch jobs (OpenAI's Batch API): their rows in SQLite, beside the files they read and write.

A batch moves validating -> in_progress -> finalizing -> completed, or to failed (its input
did not validate), expired (its window passed), cancelling -> cancelled. Which server process
runs it is recorded as a lease (`runner`, `lease_until`): one process at a time, and another
takes over once the lease runs out (the first one died). Ids are random like file ids.
"""

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from server.batch.database import Database
from server.errors import NotFoundError

OPEN = ("validating", "in_progress", "finalizing", "cancelling")
TIMES = ("in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    owner       TEXT NOT NULL,
    idempotency TEXT,                 -- the creating request's Idempotency-Key header
    runner      TEXT,                 -- the process holding the lease
    lease_until REAL NOT NULL DEFAULT 0,
    state       TEXT NOT NULL         -- the Batch as JSON (see `Batch`)
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_idempotency ON batches (owner, idempotency);
"""


@dataclass
class Batch:
    """One batch, as stored and (with `to_api`) as OpenAI returns it."""

    id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    expires_at: int
    metadata: dict[str, str] | None = None
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)  # status -> when it was entered
    errors: list[dict[str, Any]] = field(default_factory=list)  # validation errors
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    usage: dict[str, int] = field(
        default_factory=lambda: {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    )

    def to_api(self) -> dict[str, Any]:
        """OpenAI's batch object."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
            "usage": {
                "input_tokens": self.usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.usage["total_tokens"],
            },
        }
        for name in TIMES:
            body[f"{name}_at"] = self.times.get(name)
        return body

    def moved(self, status: str) -> "Batch":
        """This batch in `status`, stamped with the time it got there."""
        return replace(self, status=status, times={**self.times, status: int(time.time())})


class BatchStore:
    """Batch rows in `root/batch.sqlite3` (the file store's database); safe from many threads."""

    def __init__(self, root: Path):
        self._db = Database(root, _SCHEMA)

    def create(self, batch: Batch, idempotency: str | None) -> tuple[Batch, bool]:
        """Store a new batch, or return the one this owner created with `idempotency` before
        (and False: nothing new was started)."""
        with self._db.transaction() as db:
            if idempotency is not None:
                row = db.execute(
                    "SELECT state FROM batches WHERE owner = ? AND idempotency = ?",
                    (batch.owner, idempotency),
                ).fetchone()
                if row is not None:
                    return _load(row[0]), False
            db.execute(
                "INSERT INTO batches (id, owner, idempotency, state) VALUES (?, ?, ?, ?)",
                (batch.id, batch.owner, idempotency, _dump(batch)),
            )
        return batch, True

    def get(self, batch_id: str, owner: str | None, param: str = "batch_id") -> Batch:
        """The batch if `owner` may see it (None: any owner); else 404 naming `param`."""
        with self._db.transaction() as db:
            row = db.execute("SELECT state FROM batches WHERE id = ?", (batch_id,)).fetchone()
        batch = None if row is None else _load(row[0])
        if batch is None or (owner is not None and batch.owner != owner):
            raise NotFoundError(f"No such Batch object: {batch_id}", param)
        return batch

    def update(self, batch_id: str, change: Callable[[Batch], Batch]) -> Batch:
        """Apply `change` to the stored batch and store the result, in one transaction: the
        runner's counts and a client's cancel never overwrite each other."""
        with self._db.transaction() as db:
            row = db.execute("SELECT state FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"No such Batch object: {batch_id}", "batch_id")
            batch = change(_load(row[0]))
            db.execute("UPDATE batches SET state = ? WHERE id = ?", (_dump(batch), batch_id))
        return batch

    def page(self, owner: str | None, after: str | None, limit: int) -> tuple[list[Batch], bool]:
        """Batches `owner` may see (None: all), newest first, after the cursor `after`."""
        where, args = ["1 = 1"], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if after is not None:
            self.get(after, owner, "after")
            where.append("seq < (SELECT seq FROM batches WHERE id = ?)")
            args.append(after)
        query = f"SELECT state FROM batches WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        with self._db.transaction() as db:
            rows = db.execute(query, (*args, limit + 1)).fetchall()
        return [_load(row[0]) for row in rows[:limit]], len(rows) > limit

    def open_count(self, owner: str) -> int:
        """How many of `owner`'s batches are still open (not yet ended)."""
        with self._db.transaction() as db:
            rows = db.execute("SELECT state FROM batches WHERE owner = ?", (owner,)).fetchall()
        return sum(_load(row[0]).status in OPEN for row in rows)

    def claim(self, runner: str, lease_s: float, only_own: bool = False) -> list[Batch]:
        """Open batches whose lease is free or `runner`'s own: leased to `runner` now.

        `only_own` renews `runner`'s leases and takes no free batch.
        """
        now = time.time()
        claimed = []
        with self._db.transaction() as db:
            rows = db.execute(
                "SELECT id, state FROM batches WHERE runner IS ? OR lease_until < ?",
                (runner, 0 if only_own else now),
            ).fetchall()
            for batch_id, state in rows:
                batch = _load(state)
                if batch.status in OPEN:
                    db.execute(
                        "UPDATE batches SET runner = ?, lease_until = ? WHERE id = ?",
                        (runner, now + lease_s, batch_id),
                    )
                    claimed.append(batch)
        return claimed

    def release(self, batch_id: str, runner: str) -> None:
        """Give up the lease (the batch ended, or this process stops)."""
        with self._db.transaction() as db:
            db.execute(
                "UPDATE batches SET runner = NULL, lease_until = 0 WHERE id = ? AND runner = ?",
                (batch_id, runner),
            )

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def new_batch_id() -> str:
    """A random, unguessable batch id."""
    return f"batch_{secrets.token_hex(12)}"


def _dump(batch: Batch) -> str:
    return json.dumps(asdict(batch))


def _load(text: str) -> Batch:
    return Batch(**json.loads(text))
