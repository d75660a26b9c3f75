"""Calls a route of this app from inside the process, as a given caller: batch lines go through
exactly what live requests go through (validation, admission, limits, usage, errors)."""

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message

from server.traffic.auth import INTERNAL_CALLER, Caller


async def call_route(
    app: ASGIApp,
    caller: Caller,
    path: str,
    body: dict[str, Any],
    gone: asyncio.Event | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST `body` to `path` of `app` as `caller`: the status and the JSON answer.

    Setting `gone` disconnects the caller: the route stops as for a client that went away
    (499 and no body).
    """
    payload = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 0),
        "server": ("kangaroo.internal", 0),
        INTERNAL_CALLER: caller,
    }
    sent = False
    status = 500
    chunks: list[bytes] = []
    answered = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if sent:
            # The caller stays "connected" until the answer is complete or it is `gone`:
            # routes abort the engine request when their client disconnects.
            await _either(answered, gone)
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    return status, json.loads(b"".join(chunks) or b"{}")


async def _either(event: asyncio.Event, other: asyncio.Event | None) -> None:
    if other is None:
        await event.wait()
        return
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(other.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
