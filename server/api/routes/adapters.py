"""The admin API for adapters: push (upload or folder), list, show, set the active version, delete.

POST   /v1/adapters                      multipart: `name` + the adapter files, or
                                         JSON {"name", "path"}: a folder in the adapter root
GET    /v1/adapters                      every adapter with its versions
GET    /v1/adapters/{name}               one adapter
PATCH  /v1/adapters/{name}               {"active_version": N}: rollback (or forward)
DELETE /v1/adapters/{name}               every version
DELETE /v1/adapters/{name}/versions/{N}  one version
"""

import asyncio
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import UploadFile

from server.adapters.registry import AdapterRegistry
from server.adapters.store import AdapterStore
from server.api.openapi import (
    Adapter,
    AdapterList,
    DeletedAdapter,
    DeletedVersion,
    PushedAdapter,
    push_body,
    responses,
)
from server.contract import ADAPTER_FILES, WEIGHTS_NAME
from server.errors import InvalidRequestError, RequestTooLargeError, validation_error
from server.state import ServerState, State
from server.traffic.auth import require_admin

router = APIRouter(prefix="/v1/adapters", dependencies=[Depends(require_admin)])

# Weights that unpickle on load can run code: never accepted.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers on top of the files


class AdapterFromPath(BaseModel):
    """Push a folder that is already inside the adapter root."""

    model_config = ConfigDict(extra="forbid")
    name: str
    path: str


class ActiveVersion(BaseModel):
    """Which version an adapter's name means."""

    model_config = ConfigDict(extra="forbid")
    active_version: int


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses=responses(PushedAdapter, 400, 409, 413, 503, status=201)
    | {200: {"model": PushedAdapter, "description": "Equal to the newest version: made active."}},
    openapi_extra=push_body(AdapterFromPath),
)
async def push_adapter(request: Request, response: Response, state: State) -> dict[str, Any]:
    """Check, probe and store a new version; 200 instead of 201 when it equals the newest."""
    registry = _registry(state)
    state.ready_engine()
    limit = state.settings.adapter_max_mib * 2**20
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        name, staged = await _receive_upload(request, registry.store, limit)
    elif content_type.startswith("application/json"):
        try:
            body = AdapterFromPath.model_validate_json(await request.body())
        except ValidationError as exc:
            raise validation_error(exc.errors()) from None
        name = body.name
        staged = await asyncio.to_thread(_stage_folder, registry.store, body.path, limit)
    else:
        raise InvalidRequestError(
            "Send the adapter as multipart/form-data (a 'name' field and the files "
            f'{", ".join(ADAPTER_FILES)}) or as JSON {{"name": ..., "path": ...}}.'
        )
    record, new = await registry.push(name, staged)
    if not new:
        response.status_code = 200
    pinned = f"{name}@{record.version}"
    return {**record.public(), "model": name, "pinned_model": pinned, "new": new}


@router.get("", response_model=None, responses=responses(AdapterList, 400))
async def list_adapters(state: State) -> dict[str, Any]:
    """Every adapter on disk, with its versions."""
    registry = _registry(state)
    return {"object": "list", "data": [registry.describe(name) for name in registry.names()]}


@router.get("/{name}", response_model=None, responses=responses(Adapter, 400, 404))
async def get_adapter(name: str, state: State) -> dict[str, Any]:
    """One adapter with its versions and the active one."""
    return _registry(state).describe(name)


@router.patch("/{name}", response_model=None, responses=responses(Adapter, 400, 404))
async def set_active_version(name: str, body: ActiveVersion, state: State) -> dict[str, Any]:
    """Point the name at one of its versions."""
    registry = _registry(state)
    registry.set_active(name, body.active_version)
    return registry.describe(name)


@router.delete("/{name}", response_model=None, responses=responses(DeletedAdapter, 400, 404))
async def delete_adapter(name: str, state: State) -> dict[str, Any]:
    """Delete every version (requests in flight finish first)."""
    versions = await _registry(state).delete(name)
    return {"id": name, "object": "adapter", "deleted": True, "versions": versions}


@router.delete(
    "/{name}/versions/{version}",
    response_model=None,
    responses=responses(DeletedVersion, 400, 404),
)
async def delete_version(name: str, version: int, state: State) -> dict[str, Any]:
    """Delete one version; the name then means the newest remaining unless pointed elsewhere."""
    await _registry(state).delete(name, version)
    return {"id": f"{name}@{version}", "object": "adapter.version", "deleted": True}


def _registry(state: ServerState) -> AdapterRegistry:
    if state.adapters is None:
        raise InvalidRequestError(
            "This server has no adapter registry; start it with --adapter-dir DIR."
        )
    return state.adapters


async def _receive_upload(request: Request, store: AdapterStore, limit: int) -> tuple[str, Path]:
    length = request.headers.get("content-length")
    if length is None:
        raise InvalidRequestError("An adapter upload needs a Content-Length header.")
    if int(length) > limit + FORM_OVERHEAD:
        raise RequestTooLargeError(
            f"The upload is {int(length):,} bytes; this server accepts adapters of at most "
            f"{limit:,} bytes (setting adapter_max_mib)."
        )
    async with request.form(max_files=8, max_fields=1) as form:  # 8: room to name extras
        name = form.get("name")
        if not isinstance(name, str):
            raise InvalidRequestError("Missing required form field: 'name'.", "name")
        uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        staged = store.new_staging()
        try:
            await asyncio.to_thread(_save_uploads, uploads, staged)
        except BaseException:
            store.discard(staged)
            raise
    return name, staged


def _save_uploads(uploads: list[UploadFile], staged: Path) -> None:
    for upload in uploads:
        filename = upload.filename or ""
        _check_file_name(filename, "files")
        target = staged / filename
        if target.exists():
            raise InvalidRequestError(f"The file '{filename}' was sent twice.", "files")
        with target.open("wb") as out:
            shutil.copyfileobj(upload.file, out)


def _check_file_name(filename: str, param: str) -> None:
    if Path(filename).suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidRequestError(
            f"'{filename}' is a pickle file, which can run code when loaded; send the weights "
            f"as {WEIGHTS_NAME}.",
            param,
        )
    if filename not in ADAPTER_FILES:
        raise InvalidRequestError(
            f"Unexpected file '{filename}': an adapter is {', '.join(ADAPTER_FILES)} "
            f"(the last one optional).",
            param,
        )


def _stage_folder(store: AdapterStore, path: str, limit: int) -> Path:
    """Copy an adapter folder from inside the adapter root into a staging folder."""
    try:
        folder = (store.root / path).resolve()  # an absolute `path` replaces the root here
        is_dir = folder.is_dir()
    except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the file system
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidRequestError(
            f"No adapter folder at {path!r} in the adapter root: {reason}.", "path"
        ) from None
    if not folder.is_relative_to(store.root) or folder.is_relative_to(store.staging):
        raise InvalidRequestError(
            f"'path' must name a folder inside the adapter root {store.root}; {path!r} resolves "
            f"to {folder}.",
            "path",
        )
    if not is_dir:
        raise InvalidRequestError(f"No adapter folder at {path!r} in the adapter root.", "path")
    for entry in folder.iterdir():
        if entry.suffix.lower() in PICKLE_SUFFIXES and not (folder / WEIGHTS_NAME).exists():
            _check_file_name(entry.name, "path")
    staged = store.new_staging()
    try:
        total = 0
        for name in ADAPTER_FILES:
            source = folder / name
            if not source.exists():
                continue
            real = source.resolve()
            if not real.is_relative_to(store.root):
                raise InvalidRequestError(
                    f"'{name}' in {path!r} links to {real}, outside the adapter root.", "path"
                )
            total += real.stat().st_size
            if total > limit:
                raise RequestTooLargeError(
                    f"The adapter at {path!r} is over {limit:,} bytes (setting adapter_max_mib)."
                )
            shutil.copyfile(real, staged / name)
    except BaseException:
        store.discard(staged)
        raise
    return staged
