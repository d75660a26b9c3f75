"""Who may call what: API keys checked before any route runs, and the admin API's guard.

Keys (`Authorization: Bearer KEY`) are inference keys or admin keys, from settings or key files.
They are kept as SHA-256 digests and a presented key is compared with every one of them in
constant time. Once any key is configured, `KeyAuth` (an ASGI middleware, so a new route cannot
forget it) answers 401 to every request without a valid key except `/health` (and `/ready` with
`open_probes`); admin routes need an admin key, an inference key gets 403. With no keys at all
the API is open (the server binds to 127.0.0.1 by default) and the admin API answers only
clients on the server's machine.
"""

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import APIError, AuthenticationError, PermissionDeniedError, api_error_body
from server.settings import Settings

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/v1/adapters"


class Role(Enum):
    """What a key may do."""

    INFERENCE = "inference"
    ADMIN = "admin"


@dataclass(frozen=True)
class KeyRing:
    """SHA-256 digests of the configured keys, each with its role."""

    digests: tuple[tuple[bytes, Role], ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        """Keys from the settings and the key files."""
        inference = [k.get_secret_value() for k in settings.api_keys]
        admin = [settings.admin_key.get_secret_value()] if settings.admin_key else []
        inference += read_keys_file(settings.api_keys_file)
        admin += read_keys_file(settings.admin_keys_file)
        entries = [(digest(k), Role.INFERENCE) for k in inference]
        entries += [(digest(k), Role.ADMIN) for k in admin]
        return cls(tuple(entries))

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (then every route but the probes needs one)."""
        return bool(self.digests)

    def role_of(self, key: str) -> Role | None:
        """The role of `key`, or None; compares with every digest, without stopping early."""
        candidate = digest(key)
        found = None
        for known, role in self.digests:
            if hmac.compare_digest(known, candidate) and found is not Role.ADMIN:
                found = role
        return found


def digest(key: str) -> bytes:
    """SHA-256 of a key: what is kept and compared."""
    return hashlib.sha256(key.encode()).digest()


def read_keys_file(path: Path | None) -> list[str]:
    """Keys of a file, one per line; blank lines and lines starting with # are skipped."""
    if path is None:
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class KeyAuth:
    """ASGI middleware: the key check in front of every route."""

    def __init__(self, app: ASGIApp, keys: KeyRing, open_paths: Iterable[str]):
        self.app = app
        self.keys = keys
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        role = self.keys.role_of(_bearer_token(scope) or "")
        error = self._refusal(scope, role)
        if error is None:
            scope.setdefault("state", {})["key_role"] = role  # read by require_admin
            await self.app(scope, receive, send)
            return
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else {}
        response = JSONResponse(api_error_body(error), error.status_code, headers)
        await response(scope, receive, send)

    def _refusal(self, scope: Scope, role: Role | None) -> APIError | None:
        if _bearer_token(scope) is None:
            return AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
            )
        if role is None:
            return AuthenticationError("Incorrect API key provided.")
        if scope["path"].startswith(ADMIN_PREFIX) and role is not Role.ADMIN:
            return PermissionDeniedError(
                "This route needs an admin key; yours is an inference key."
            )
        return None


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


def open_paths(settings: Settings) -> list[str]:
    """Paths that answer without a key."""
    return ["/health", "/ready"] if settings.open_probes else ["/health"]


def require_admin(request: Request) -> None:
    """FastAPI dependency of the admin routes. With keys configured `KeyAuth` has already let
    only admin keys through; with none, only clients on this machine may call them."""
    if getattr(request.state, "key_role", None) is Role.ADMIN:
        return
    if not _is_loopback(request.client.host if request.client else None):
        raise PermissionDeniedError(
            "No keys are configured, so the admin API answers only clients on the server's "
            "machine; set admin_key (KANGAROO_ADMIN_KEY) to use it remotely."
        )


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
