"""A SQLite database under `data_dir` (the batch package's `batch.sqlite3`, shared by the file
and batch stores; the response store's `responses.sqlite3`): one connection per store, WAL mode
so that several processes can share it."""

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Database:
    """One connection to `root/filename` with `schema` applied; safe from many threads."""

    def __init__(
        self, root: Path, schema: str, filename: str = "batch.sqlite3", synchronous: str = "FULL"
    ):
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / filename, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(schema)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection, inside a transaction (committed at the end, rolled back on error)."""
        with self._lock, self._db:
            yield self._db

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
