"""The file store on its own: what survives a restart, and what a crash leaves behind."""

import io
import os
import time
from pathlib import Path

import pytest

from server.batch.files import ORPHAN_AGE_S, FileStore
from server.errors import NotFoundError, RequestTooLargeError


def test_files_survive_a_restart(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_bytes=1024)
    record = store.save(io.BytesIO(b'{"a": 1}\n'), "in.jsonl", "batch", "key-a")
    store.close()
    again = FileStore(tmp_path, max_bytes=1024)
    assert again.get(record.id, "key-a") == record
    assert again.path(record).read_bytes() == b'{"a": 1}\n'
    with pytest.raises(NotFoundError):
        again.get(record.id, "key-b")


def test_ids_are_random_and_unguessable(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_bytes=1024)
    ids = [store.save(io.BytesIO(b"x"), "f", "batch", "k").id for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(i) == len("file-") + 24 and int(i[5:], 16) >= 0 for i in ids)


def test_a_file_over_the_limit_leaves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_bytes=10)
    with pytest.raises(RequestTooLargeError):
        store.save(io.BytesIO(b"x" * 11), "f", "batch", "k")
    assert list((tmp_path / "files").iterdir()) == []
    assert store.list(None, None, 10, "asc", None).records == []


def test_orphan_bytes_are_removed_at_start_once_old(tmp_path: Path) -> None:
    store = FileStore(tmp_path, max_bytes=1024)
    kept = store.save(io.BytesIO(b"x"), "f", "batch", "k")
    store.close()
    old, fresh = tmp_path / "files" / "file-old", tmp_path / "files" / ".upload-fresh"
    old.write_bytes(b"left by a crash")
    fresh.write_bytes(b"another server is writing this")
    stale = time.time() - ORPHAN_AGE_S - 60
    os.utime(old, (stale, stale))
    FileStore(tmp_path, max_bytes=1024)
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == sorted([kept.id, fresh.name])
