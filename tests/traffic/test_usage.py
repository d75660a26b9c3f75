"""The usage store: counts per key, model and day in SQLite, written off the caller's thread."""

import datetime
import sqlite3
import threading
import time
from pathlib import Path

from server.traffic.usage import UsageStore, Use


def _store(path: Path) -> UsageStore:
    store = UsageStore(path)
    store.start()
    return store


def test_uses_are_summed_per_key_and_model(tmp_path: Path) -> None:
    store = _store(tmp_path / "usage.sqlite3")
    store.add(Use("app", "base", prompt_tokens=10, completion_tokens=5))
    store.add(Use("app", "base", prompt_tokens=20, completion_tokens=7))
    store.add(Use("app", "bot", prompt_tokens=1, completion_tokens=1))
    store.add(Use("ops", "base", prompt_tokens=3, completion_tokens=0))
    rows = store.report()
    assert rows == [
        {"key_id": "app", "model": "base", "requests": 2, "prompt_tokens": 30,
         "completion_tokens": 12, "total_tokens": 42},
        {"key_id": "app", "model": "bot", "requests": 1, "prompt_tokens": 1,
         "completion_tokens": 1, "total_tokens": 2},
        {"key_id": "ops", "model": "base", "requests": 1, "prompt_tokens": 3,
         "completion_tokens": 0, "total_tokens": 3},
    ]  # fmt: skip
    assert store.report(group_by=("key_id",))[0] == {
        "key_id": "app", "requests": 3, "prompt_tokens": 31, "completion_tokens": 13,
        "total_tokens": 44,
    }  # fmt: skip
    today = datetime.datetime.now(datetime.UTC).date()
    assert store.report(group_by=("day",)) == [
        {"day": today.isoformat(), "requests": 4, "prompt_tokens": 34, "completion_tokens": 13,
         "total_tokens": 47},
    ]  # fmt: skip
    assert store.report(start=today + datetime.timedelta(days=1)) == []
    store.close()


def test_usage_survives_a_restart_and_processes_can_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    first, second = _store(path), _store(path)  # two server processes on one machine
    for _ in range(50):
        first.add(Use("app", "base", 1, 2))
        second.add(Use("app", "base", 1, 2))
    first.close()
    second.close()
    again = _store(path)
    assert again.report()[0]["requests"] == 100
    assert again.report()[0]["completion_tokens"] == 200
    again.close()


def test_add_never_waits_for_the_disk(tmp_path: Path, monkeypatch) -> None:
    store = _store(tmp_path / "usage.sqlite3")
    gate = threading.Event()
    original = UsageStore._write

    def slow_write(self, db, batch):  # the disk hangs until the test lets it go
        gate.wait(10)
        original(self, db, batch)

    monkeypatch.setattr(UsageStore, "_write", slow_write)
    store.add(Use("app", "base", 1, 1))
    started = time.monotonic()
    for _ in range(1000):
        store.add(Use("app", "base", 1, 1))  # returns at once although the writer is stuck
    assert time.monotonic() - started < 5.0  # a blocked add would wait the writer's 10 s
    gate.set()
    assert store.report()[0]["requests"] == 1001
    store.close()


def test_batch_tokens_are_counted_apart_from_live_tokens(tmp_path: Path) -> None:
    store = _store(tmp_path / "usage.sqlite3")
    store.add(Use("app", "base", 10, 5))
    store.add(Use("app", "base", 7, 3, mode="batch"))
    store.add(Use("app", "base", 1, 1, mode="batch"))
    assert store.report(group_by=("key_id", "mode")) == [
        {"key_id": "app", "mode": "batch", "requests": 2, "prompt_tokens": 8,
         "completion_tokens": 4, "total_tokens": 12},
        {"key_id": "app", "mode": "live", "requests": 1, "prompt_tokens": 10,
         "completion_tokens": 5, "total_tokens": 15},
    ]  # fmt: skip
    store.close()


def test_a_file_from_before_modes_keeps_its_usage_as_live(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE usage (day TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL, "
            "requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens "
            "INTEGER NOT NULL, PRIMARY KEY (day, key_id, model))"
        )
        db.execute("INSERT INTO usage VALUES ('2026-01-02', 'app', 'base', 4, 40, 20)")
    db.close()
    store = _store(path)
    store.add(Use("app", "base", 1, 1, mode="batch"))
    assert store.report(group_by=("day", "mode")) == [
        {"day": "2026-01-02", "mode": "live", "requests": 4, "prompt_tokens": 40,
         "completion_tokens": 20, "total_tokens": 60},
        {"day": datetime.datetime.now(datetime.UTC).date().isoformat(), "mode": "batch",
         "requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    ]  # fmt: skip
    store.close()
