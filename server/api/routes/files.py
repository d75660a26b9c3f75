"""OpenAI's Files API, for batch input: upload, list, show, download, delete.

POST   /v1/files               multipart: `file` (JSONL) and `purpose` ("batch")
GET    /v1/files               cursor pages: `after`, `limit`, `order`, `purpose`
GET    /v1/files/{id}          the file object
GET    /v1/files/{id}/content  the bytes
DELETE /v1/files/{id}

A key sees only its own files (another key's id is a 404, as a missing one); admin keys, and
the one caller of a server without keys, see all.
"""

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from server.api.openapi import DeletedFile, FileList, FileObject, responses, upload_body
from server.api.replies import cursor_page
from server.batch.files import FileStore
from server.errors import InvalidRequestError, RequestTooLargeError
from server.state import State
from server.traffic.auth import owner_id, visible_owner

router = APIRouter(prefix="/v1/files")

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers on top of the file
MAX_FIELDS = 4  # enough to name what a client sent that we do not take


@router.post(
    "",
    response_model=None,
    responses=responses(FileObject, 400, 413),
    openapi_extra=upload_body(),
)
async def upload_file(request: Request, state: State) -> dict[str, Any]:
    """Store an uploaded file; 413 past `file_max_mib` (checked before the body is read)."""
    store = state.files
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > store.max_bytes + FORM_OVERHEAD:
        raise RequestTooLargeError(
            f"The upload is {int(length):,} bytes; this server accepts files of at most "
            f"{store.max_bytes:,} bytes (setting file_max_mib)."
        )
    async with request.form(max_files=1, max_fields=MAX_FIELDS) as form:
        for name in form:
            if name not in ("file", "purpose"):
                # e.g. OpenAI's expires_after[...]: files here are kept until deleted.
                raise InvalidRequestError(f"Unsupported form field: '{name}'.", name)
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(purpose, str):
            raise InvalidRequestError("Missing required form field: 'purpose'.", "purpose")
        if purpose != "batch":
            raise InvalidRequestError(
                f"'purpose' is {purpose!r}; this server takes files for: batch.", "purpose"
            )
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("Missing required form field: 'file' (a file).", "file")
        record = await asyncio.to_thread(
            store.save, upload.file, upload.filename or "upload.jsonl", purpose, owner_id(request)
        )
    return record.to_api()


@router.get("", response_model=None, responses=responses(FileList, 400, 404))
async def list_files(
    request: Request,
    state: State,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict[str, Any]:
    """The caller's files, newest first unless `order=asc`."""
    page = await asyncio.to_thread(
        state.files.list, visible_owner(request), after, limit, order, purpose
    )
    data = [record.to_api() for record in page.records]
    return cursor_page(data, page.has_more)


@router.get("/{file_id}", response_model=None, responses=responses(FileObject, 404))
async def retrieve_file(file_id: str, request: Request, state: State) -> dict[str, Any]:
    """One file object."""
    return (await asyncio.to_thread(state.files.get, file_id, visible_owner(request))).to_api()


@router.get(
    "/{file_id}/content",
    response_class=FileResponse,
    responses=responses(None, 404, media_type="application/octet-stream"),
)
async def file_content(file_id: str, request: Request, state: State) -> FileResponse:
    """The file's bytes, as uploaded."""
    store: FileStore = state.files
    record = await asyncio.to_thread(store.get, file_id, visible_owner(request))
    return FileResponse(
        store.path(record), media_type="application/octet-stream", filename=record.filename
    )


@router.delete("/{file_id}", response_model=None, responses=responses(DeletedFile, 404))
async def delete_file(file_id: str, request: Request, state: State) -> dict[str, Any]:
    """Delete the file and its bytes."""
    await asyncio.to_thread(state.files.delete, file_id, visible_owner(request))
    return {"id": file_id, "object": "file", "deleted": True}
