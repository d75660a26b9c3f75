"""Stored responses (`data_dir/responses.sqlite3`): the response object, its input items, the
conversation it ends, and every stream event from sequence 0, owned by the key that made it.

A response is kept for `responses_retention_s` after it was created, and the store keeps at most
`responses_max_stored` (the oldest go first). A process generating a response renews its claim
(`alive_until`) as it writes events; a response still "in progress" whose claim ran out lost its
process (a crash, a SIGKILL): readers see it failed, with a terminal event, never a hang.
"""

import json
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.batch.database import Database
from server.errors import NotFoundError

CLAIM_S = 10.0  # how long a generating process's claim lasts without a renewal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    owner        TEXT NOT NULL,
    created_at   REAL NOT NULL,
    alive_until  REAL NOT NULL,       -- the generating process's claim
    response     TEXT NOT NULL,       -- the response object (JSON)
    input_items  TEXT NOT NULL,       -- the request's input items (JSON list)
    conversation TEXT,                -- chat messages up to and with the answer, once ended
    cancel_asked INTEGER NOT NULL DEFAULT 0  -- a cancel asked of another process
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);
CREATE TABLE IF NOT EXISTS response_events (
    response_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (response_id, seq)
);
"""
ENDED = ("completed", "incomplete", "failed", "cancelled")


def new_response_id() -> str:
    """A random, unguessable response id."""
    return f"resp_{secrets.token_hex(24)}"


@dataclass
class StoredResponse:
    """One stored response."""

    id: str
    owner: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    conversation: list[dict[str, Any]] | None
    alive_until: float

    @property
    def ended(self) -> bool:
        """Whether the response has its final status."""
        return self.response["status"] in ENDED


class ResponseStore:
    """The responses and their events on disk."""

    def __init__(self, root: Path, retention_s: float, max_stored: int):
        # WAL with synchronous=NORMAL: a commit survives the process's crash or SIGKILL (the
        # log is in the OS's hands); only a power cut may take the last ones. Three commits a
        # response at full sync cost a quarter of the short-request throughput.
        self._db = Database(root, _SCHEMA, "responses.sqlite3", synchronous="NORMAL")
        self.retention_s = retention_s
        self.max_stored = max_stored

    def create(self, owner: str, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
        """Store a new response (in progress: claimed by this process); the expired ones and
        the oldest over the limit go in the same transaction."""
        now = time.time()
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO responses (id, owner, created_at, alive_until, response, input_items)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    response["id"],
                    owner,
                    now,
                    now + CLAIM_S,
                    json.dumps(response),
                    json.dumps(items),
                ),
            )
            self._purge(db, now)

    def get(self, response_id: str, owner: str | None) -> StoredResponse:
        """The response; 404 if there is none or it is another key's (`owner` None: any)."""
        with self._db.transaction() as db:
            row = db.execute(
                "SELECT id, owner, response, input_items, conversation, alive_until "
                "FROM responses WHERE id = ?",
                (response_id,),
            ).fetchone()
        if row is None or (owner is not None and row[1] != owner):
            raise NotFoundError(f"No response with id '{response_id}'.", "response_id")
        conversation = json.loads(row[4]) if row[4] else None
        return StoredResponse(
            row[0], row[1], json.loads(row[2]), json.loads(row[3]), conversation, row[5]
        )

    def append(self, response_id: str, events: list[tuple[int, str, str]]) -> bool:
        """Write events (sequence number, type, JSON) and renew this process's claim; whether
        a cancel was asked (of another process sharing the data folder)."""
        with self._db.transaction() as db:
            self._insert(db, response_id, events)
            db.execute(
                "UPDATE responses SET alive_until = ? WHERE id = ?",
                (time.time() + CLAIM_S, response_id),
            )
            row = db.execute(
                "SELECT cancel_asked FROM responses WHERE id = ?", (response_id,)
            ).fetchone()
        return bool(row and row[0])

    def renew(self, response_id: str) -> None:
        """Renew this process's claim on a response it is generating."""
        with self._db.transaction() as db:
            db.execute(
                "UPDATE responses SET alive_until = ? WHERE id = ? AND alive_until > 0",
                (time.time() + CLAIM_S, response_id),
            )

    def ask_cancel(self, response_id: str) -> None:
        """Ask the process generating the response to cancel it (at its next write)."""
        with self._db.transaction() as db:
            db.execute("UPDATE responses SET cancel_asked = 1 WHERE id = ?", (response_id,))

    def end(
        self,
        response: dict[str, Any],
        conversation: list[dict[str, Any]] | None,
        events: Sequence[tuple[int, str, str]] = (),
    ) -> None:
        """Save the last events, the response's final object and the conversation it ends."""
        with self._db.transaction() as db:
            self._insert(db, response["id"], events)
            db.execute(
                "UPDATE responses SET response = ?, conversation = ?, alive_until = 0 WHERE id = ?",
                (json.dumps(response), json.dumps(conversation), response["id"]),
            )

    def events_after(self, response_id: str, after: int) -> list[tuple[int, str, str]]:
        """The stored events with a sequence number above `after`, in order."""
        with self._db.transaction() as db:
            return db.execute(
                "SELECT seq, type, data FROM response_events "
                "WHERE response_id = ? AND seq > ? ORDER BY seq",
                (response_id, after),
            ).fetchall()

    def delete(self, response_id: str) -> None:
        """Remove the response and its events."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            db.execute("DELETE FROM response_events WHERE response_id = ?", (response_id,))

    def _insert(
        self, db: sqlite3.Connection, response_id: str, events: Sequence[tuple[int, str, str]]
    ) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO response_events (response_id, seq, type, data) "
            "VALUES (?, ?, ?, ?)",
            [(response_id, seq, kind, data) for seq, kind, data in events],
        )

    def _purge(self, db: sqlite3.Connection, now: float) -> None:
        old = [
            row[0]
            for row in db.execute(
                # Two indexed lookups (created_at, the rowid), not a scan of the table.
                "SELECT id FROM responses WHERE created_at < ? UNION "
                "SELECT id FROM responses WHERE seq <= (SELECT MAX(seq) FROM responses) - ?",
                (now - self.retention_s, self.max_stored),
            )
        ]
        for response_id in old:
            db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            db.execute("DELETE FROM response_events WHERE response_id = ?", (response_id,))

    def close(self) -> None:
        """Close the database."""
        self._db.close()
