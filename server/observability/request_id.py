"""X-Request-ID: taken from the request when it is a sane id, else made; sent back on the response.

Proxies and clients use it to match their logs with ours. It is not the engine's request id
(a client's id need not be unique).
"""

import itertools
import os
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Ids are this process's random prefix and a counter: unique without a system call for random
# bytes on every request (uuid4 showed up in profiles of request bursts).
_PREFIX = os.urandom(6).hex()
_COUNTER = itertools.count()


def new_id() -> str:
    """A new id, 32 hex digits: this process's random prefix, then a counter."""
    return f"{_PREFIX}{next(_COUNTER):020x}"


class RequestId:
    """ASGI middleware: every HTTP response carries an X-Request-ID header."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == HEADER.encode()), "")
        request_id = given if _SANE.fullmatch(given) else new_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
