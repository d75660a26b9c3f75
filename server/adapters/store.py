"""The adapter registry on disk: the source of truth that server replicas share.

    ROOT/
      NAME/
        active            the version NAME means (text; replaced atomically)
        v1/               one immutable version: the adapter files + version.json
        v2.deleted        tombstone: v2 was deleted (its number is never given again)
      .staging/           uploads being checked; never read as versions

A version appears by renaming a complete folder into place, so a crash leaves either nothing
or a whole version; a rename onto an existing version fails, so two replicas pushing at once
get different numbers. Version numbers are never reused, also after deleting a whole adapter
(its folder keeps the tombstones): a replica that cached `NAME@3` can never meet other weights
under that number. Nothing here knows the engine: `server.adapters.registry` builds on it.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from server.adapters.checks import AdapterInfo
from server.contract import ADAPTER_FILES
from server.errors import InvalidRequestError, ModelNotFoundError

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
RECORD_NAME = "version.json"
_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")
_TOMBSTONE = re.compile(r"v([1-9][0-9]*)\.deleted")


@dataclass(frozen=True)
class VersionRecord:
    """One stored version, as written to its version.json."""

    name: str
    version: int
    sha256: str  # over the adapter files' names and bytes
    created: int  # unix seconds
    size_bytes: int
    rank: int
    alpha: float
    target_modules: list[str]
    eval_loss: float | None
    train_loss: float | None
    base_fingerprint: str | None
    # finetune's accuracy report in vLLM; None for adapters without one (and older versions)
    eval_accuracy: dict[str, Any] | None = None

    def public(self) -> dict[str, Any]:
        """The record as the admin API shows it."""
        return {"object": "adapter.version", **asdict(self)}


def check_name(name: str) -> str:
    """`name` if it is a valid adapter name, else a 400 naming it."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidRequestError(
            f"Invalid adapter name {name!r}: use 1-64 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit.",
            "name",
        )
    return name


def content_hash(folder: Path) -> str:
    """sha256 over the names and bytes of the adapter files in `folder`."""
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\0")
    return digest.hexdigest()


class AdapterStore:
    """Versions of named adapters under one root folder."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.staging = self.root / ".staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    # Reading

    def names(self) -> list[str]:
        """Every adapter name with at least one live version."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if NAME_PATTERN.fullmatch(p.name) and p.is_dir() and self.versions(p.name)
        )

    def versions(self, name: str) -> list[int]:
        """Live version numbers of `name`, ascending."""
        folder = self.root / name
        try:
            entries = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        dead = {int(m[1]) for e in entries if (m := _TOMBSTONE.fullmatch(e))}
        return sorted(
            int(m[1]) for e in entries if (m := _VERSION_DIR.fullmatch(e)) and int(m[1]) not in dead
        )

    def active_version(self, name: str) -> int | None:
        """The version `name` means: the pointer if it names a live version, else the newest."""
        live = self.versions(name)
        try:
            pointed = int((self.root / name / "active").read_text())
        except (FileNotFoundError, ValueError):
            pointed = None
        if pointed in live:
            return pointed
        return live[-1] if live else None

    def is_live(self, name: str, version: int) -> bool:
        """Whether `name` version `version` exists and is not deleted (two stat calls)."""
        folder = self.root / name
        live, tombstone = folder / f"v{version}", folder / f"v{version}.deleted"
        try:
            return live.is_dir() and not tombstone.exists()
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # a number too long for a file name: no version
                return False
            raise

    def path(self, name: str, version: int) -> Path:
        """The folder of one version."""
        return self.root / name / f"v{version}"

    def record(self, name: str, version: int) -> VersionRecord:
        """The version.json of one version; 404 when it is not there."""
        try:
            data = json.loads((self.path(name, version) / RECORD_NAME).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            raise ModelNotFoundError(f"{name}@{version}", param="version") from None
        return VersionRecord(**data)

    # Writing

    def new_staging(self) -> Path:
        """An empty folder for an upload being checked."""
        folder = self.staging / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def commit(self, name: str, staged: Path, info: AdapterInfo, sha256: str) -> VersionRecord:
        """Move a checked staging folder into place as the next version and make it active."""
        (self.root / name).mkdir(exist_ok=True)
        while True:
            version = self._next_version(name)
            record = VersionRecord(
                name=name,
                version=version,
                sha256=sha256,
                created=int(time.time()),
                size_bytes=info.size_bytes,
                rank=info.rank,
                alpha=info.alpha,
                target_modules=list(info.target_modules),
                eval_loss=info.eval_loss,
                eval_accuracy=info.eval_accuracy,
                train_loss=None if info.manifest is None else info.manifest.get("final_train_loss"),
                base_fingerprint=None
                if info.manifest is None
                else (info.manifest.get("base_model") or {}).get("fingerprint"),
            )
            (staged / RECORD_NAME).write_text(json.dumps(asdict(record), indent=2) + "\n")
            try:
                os.rename(staged, self.path(name, version))
            except OSError:  # another replica took this number first
                continue
            self.set_active(name, version)
            return record

    def set_active(self, name: str, version: int) -> None:
        """Point `name` at `version` (atomic replace of the pointer file)."""
        if not self.is_live(name, version):
            raise ModelNotFoundError(f"{name}@{version}", param="active_version")
        pointer = self.root / name / f".active-{uuid.uuid4().hex}"
        pointer.write_text(f"{version}\n")
        os.replace(pointer, self.root / name / "active")

    def mark_deleted(self, name: str, version: int) -> None:
        """Tombstone one version: from now on no replica resolves it; files go in `purge`."""
        if not self.is_live(name, version):
            raise ModelNotFoundError(f"{name}@{version}", param="version")
        (self.root / name / f"v{version}.deleted").touch()
        if self.active_version(name) is None:  # the last live version: the name is gone
            (self.root / name / "active").unlink(missing_ok=True)

    def purge(self, name: str, version: int) -> None:
        """Remove the files of a tombstoned version (once no request uses them)."""
        self._remove(self.path(name, version))

    def discard(self, staged: Path) -> None:
        """Remove a staging folder."""
        shutil.rmtree(staged, ignore_errors=True)

    def sweep(self) -> None:
        """Start-up clean-up: leftover uploads and files of versions deleted before a crash."""
        for leftover in self.staging.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        for folder in self.root.iterdir():
            if not NAME_PATTERN.fullmatch(folder.name) or not folder.is_dir():
                continue
            for entry in os.listdir(folder):
                m = _TOMBSTONE.fullmatch(entry)
                if m and self.path(folder.name, int(m[1])).exists():
                    self.purge(folder.name, int(m[1]))

    def _next_version(self, name: str) -> int:
        # Tombstones count: a deleted version's number never comes back with other weights.
        used = [
            int(m[1])
            for e in os.listdir(self.root / name)
            if (m := _VERSION_DIR.fullmatch(e) or _TOMBSTONE.fullmatch(e))
        ]
        return max(used, default=0) + 1

    def _remove(self, path: Path) -> None:
        # Rename first: the folder disappears in one step, then its files go.
        if not path.exists():
            return
        trash = self.staging / f"trash-{uuid.uuid4().hex}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
