"""The registry on disk: immutable versions, never-reused numbers, the active pointer, crashes."""

import os
from pathlib import Path

import pytest

from server.adapters.checks import AdapterInfo
from server.adapters.store import AdapterStore, check_name, content_hash
from server.errors import InvalidRequestError, ModelNotFoundError

INFO = AdapterInfo(rank=4, alpha=8.0, target_modules=("q_proj",), size_bytes=3, manifest=None)


def staged(store: AdapterStore, content: str) -> Path:
    folder = store.new_staging()
    (folder / "adapter_config.json").write_text(content)
    return folder


def push(store: AdapterStore, name: str, content: str) -> int:
    folder = staged(store, content)
    return store.commit(name, folder, INFO, content_hash(folder)).version


def test_versions_count_up_and_the_newest_is_active(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    assert [push(store, "bot", c) for c in ("a", "b", "c")] == [1, 2, 3]
    assert store.versions("bot") == [1, 2, 3]
    assert store.active_version("bot") == 3
    assert store.record("bot", 2).sha256 != store.record("bot", 3).sha256
    assert (store.path("bot", 1) / "adapter_config.json").read_text() == "a"
    assert store.names() == ["bot"]
    assert not list(store.staging.iterdir())  # staging folders were renamed into place


def test_rollback_and_deletes_never_reuse_a_number(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    for content in ("a", "b", "c"):
        push(store, "bot", content)
    store.set_active("bot", 1)
    assert store.active_version("bot") == 1
    store.mark_deleted("bot", 3)
    store.purge("bot", 3)
    assert not store.is_live("bot", 3)
    assert push(store, "bot", "d") == 4  # not 3 again
    for version in store.versions("bot"):
        store.mark_deleted("bot", version)
    assert store.names() == []
    assert store.active_version("bot") is None
    assert push(store, "bot", "e") == 5  # the whole adapter was deleted: still no reuse


def test_deleting_the_active_version_falls_back_to_the_newest(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    for content in ("a", "b", "c"):
        push(store, "bot", content)
    store.set_active("bot", 2)
    store.mark_deleted("bot", 2)
    assert store.active_version("bot") == 3
    with pytest.raises(ModelNotFoundError):
        store.set_active("bot", 2)


def test_a_version_taken_by_another_replica_is_not_overwritten(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    push(store, "bot", "a")
    other = AdapterStore(tmp_path)  # a second replica, same root
    os.rename(staged(other, "theirs"), tmp_path / "bot" / "v2")  # it wins the race for v2
    assert push(store, "bot", "ours") == 3
    assert (store.path("bot", 2) / "adapter_config.json").read_text() == "theirs"


def test_sweep_removes_crash_leftovers(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path)
    push(store, "bot", "a")
    push(store, "bot", "b")
    half_upload = staged(store, "partial")
    store.mark_deleted("bot", 1)  # crashed before its files went
    AdapterStore(tmp_path).sweep()
    assert not half_upload.exists()
    assert not store.path("bot", 1).exists()
    assert store.versions("bot") == [2]


@pytest.mark.parametrize("name", ["bot", "support-bot", "a.b_c-1", "0", "x" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Bot", "-bot", ".hidden", "a/b", "..", "x" * 65, "a b"])
def test_bad_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        check_name(name)
    assert refused.value.param == "name"
    assert repr(name) in refused.value.message
