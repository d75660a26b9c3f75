"""Request bodies larger than the limit get 413 before they are read into memory.

A declared Content-Length over the limit is refused at once; a body sent without one (chunked)
is counted as it arrives and refused as soon as it passes the limit.
"""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import RequestTooLargeError, api_error_response


class BodyLimit:
    """ASGI middleware: a byte limit per request body, except under `exempt` path prefixes
    (routes that check a limit of their own: adapter uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...]):
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            scope.setdefault("state", {})["error"] = RequestTooLargeError.code
            await api_error_response(_too_large(limit))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                # FastAPI passes an HTTPException raised while reading the body on to the
                # error handlers (anything else would become a 400 "error parsing the body").
                raise HTTPException(413, _too_large(limit).message)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"The request body is larger than this server's limit of {limit / 2**20:g} MiB.",
    )
