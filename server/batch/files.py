"""Uploaded files (OpenAI's Files API, purpose "batch"): bytes on disk, metadata in SQLite.

A file is written to a temporary name in `data_dir/files/`, flushed to disk and renamed into
place before its row is committed, so a crash never leaves a row without its bytes; a crash
between the rename and the commit leaves bytes without a row, which the next start removes.
Ids are random (`file-` + 24 hex digits from `secrets`): nobody can guess another key's file.
"""

import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from server.batch.database import Database
from server.errors import InvalidRequestError, NotFoundError, RequestTooLargeError

PURPOSES = ("batch", "batch_output")  # uploads take only "batch"; results are "batch_output"
CHUNK = 1 << 20
ORPHAN_AGE_S = 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- upload order, for cursor pagination
    id         TEXT NOT NULL UNIQUE,
    owner      TEXT NOT NULL,                      -- the key id that uploaded it
    purpose    TEXT NOT NULL,
    filename   TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class FileRecord:
    """One stored file's metadata."""

    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: int

    def to_api(self) -> dict[str, Any]:
        """OpenAI's file object (`status: processed`: the official client waits for it)."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass(frozen=True)
class Page:
    """One page of a cursor-paginated list."""

    records: list[FileRecord]
    has_more: bool


class FileStore:
    """Files under `root/files/`, their rows in `root/batch.sqlite3`; safe from many threads."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.folder = root / "files"
        self.max_bytes = max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._db = Database(root, _SCHEMA)
        self._remove_orphans()

    def save(
        self,
        source: IO[bytes],
        filename: str,
        purpose: str,
        owner: str,
        file_id: str | None = None,
    ) -> FileRecord:
        """Store the bytes of `source` as a new file of `owner`; 413 past the size limit.

        With `file_id` given and already stored, the stored file is returned as it is (a batch
        finalized a second time after a crash).
        """
        if purpose not in PURPOSES:
            raise InvalidRequestError(
                f"'purpose' is {purpose!r}; this server takes files for: batch.", "purpose"
            )
        if file_id is not None:
            try:
                return self.get(file_id, owner)
            except NotFoundError:
                pass
        file_id = file_id or f"file-{secrets.token_hex(12)}"
        size = self._write(source, self.folder / file_id)
        record = FileRecord(file_id, owner, purpose, filename, size, int(time.time()))
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO files (id, owner, purpose, filename, bytes, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, owner, purpose, filename, size, record.created_at),
            )
        return record

    def get(self, file_id: str, owner: str | None, param: str = "file_id") -> FileRecord:
        """The file `file_id` if `owner` may see it (None: any owner); else 404 naming `param`."""
        with self._db.transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
        if row is None or (owner is not None and row[1] != owner):
            raise NotFoundError(f"No such File object: {file_id}", param)
        return FileRecord(*row)

    def path(self, record: FileRecord) -> Path:
        """Where the bytes of `record` are."""
        return self.folder / record.id

    def list(
        self, owner: str | None, after: str | None, limit: int, order: str, purpose: str | None
    ) -> Page:
        """Files `owner` may see (None: all), newest first for `order="desc"`, after `after`."""
        newest_first = order == "desc"
        where, args = ["1 = 1"], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if purpose is not None:
            where.append("purpose = ?")
            args.append(purpose)
        if after is not None:
            cursor = self.get(after, owner, "after")  # 404 for a cursor the caller cannot see
            where.append(
                "seq < (SELECT seq FROM files WHERE id = ?)"
                if newest_first
                else "seq > (SELECT seq FROM files WHERE id = ?)"
            )
            args.append(cursor.id)
        query = (
            f"SELECT {_COLUMNS} FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        )
        with self._db.transaction() as db:
            rows = db.execute(query, (*args, limit + 1)).fetchall()
        return Page([FileRecord(*row) for row in rows[:limit]], len(rows) > limit)

    def delete(self, file_id: str, owner: str | None) -> None:
        """Remove the file (its row first: a crash after that leaves only orphan bytes)."""
        record = self.get(file_id, owner)
        with self._db.transaction() as db:
            db.execute("DELETE FROM files WHERE id = ?", (record.id,))
        self.path(record).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _write(self, source: IO[bytes], target: Path) -> int:
        size = 0
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise RequestTooLargeError(
                            f"The file is larger than this server's limit of "
                            f"{self.max_bytes / 2**20:g} MiB (setting file_max_mib)."
                        )
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return size

    def _remove_orphans(self) -> None:
        """Bytes without a row (a crash mid-upload or mid-delete) are removed at start, once
        an hour old: another server sharing the folder may be writing them right now."""
        with self._db.transaction() as db:
            known = {row[0] for row in db.execute("SELECT id FROM files")}
        stale = time.time() - ORPHAN_AGE_S
        for path in self.folder.iterdir():
            if path.name not in known and path.stat().st_mtime < stale:
                path.unlink(missing_ok=True)


_COLUMNS = "id, owner, purpose, filename, bytes, created_at"
