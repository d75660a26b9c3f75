"""Who may call what: API keys checked before any route runs, and the admin API's guard.

Keys (`Authorization: Bearer KEY`) are inference keys or admin keys, from settings, key files or
`keys` tables (which also give a key its id and rate limits). They are kept as SHA-256 digests
and a presented key is compared with every one of them in constant time. Once any key is
configured, `KeyAuth` (an ASGI middleware, so a new route cannot forget it) answers 401 to every
request without a valid key except `/health` (and `/ready` with `open_probes`) and the
playground page; admin routes (the adapter and usage APIs, and `/metrics` unless
`open_metrics`) need an admin key, an inference key gets 403. With no keys at all the API is
open (the server binds to 127.0.0.1 by default) and the admin routes answer only clients on the
server's machine. Either way the request's `Caller` (key id, role, limits) is left in the
request state for what comes after.
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
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import (
    APIError,
    AuthenticationError,
    PermissionDeniedError,
    api_error_response,
)
from server.settings import Settings

logger = logging.getLogger(__name__)

# The admin API: adapters and usage (and /metrics, unless open_metrics).
ADMIN_PREFIXES = ("/v1/adapters", "/v1/usage")

ANONYMOUS_ID = "anonymous"
# The ASGI scope key of a request the process sends itself, as the `Caller` it sends it for.
# Only in-process callers can set it: the server puts nothing from the network there.
INTERNAL_CALLER = "kangaroo.caller"


class Role(Enum):
    """What a key may do."""

    INFERENCE = "inference"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key's id (never the key), its role and its rate limits.

    With no keys configured every request comes from the one anonymous caller (role None).
    """

    id: str
    role: Role | None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True)
class KeyRing:
    """SHA-256 digests of the configured keys, each with its caller."""

    digests: tuple[tuple[bytes, Caller], ...]
    anonymous: Caller

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        """Keys from the settings, the key files and the `keys` tables."""
        rpm, tpm = settings.requests_per_minute, settings.tokens_per_minute
        plain = [(k.get_secret_value(), Role.INFERENCE) for k in settings.api_keys]
        plain += [(k, Role.INFERENCE) for k in read_keys_file(settings.api_keys_file)]
        if settings.admin_key:
            plain.append((settings.admin_key.get_secret_value(), Role.ADMIN))
        plain += [(k, Role.ADMIN) for k in read_keys_file(settings.admin_keys_file)]
        entries = [(digest(k), Caller(key_id(digest(k)), role, rpm, tpm)) for k, role in plain]
        for spec in settings.keys:
            secret = digest(spec.key.get_secret_value()) if spec.key else None
            caller = Caller(
                spec.id,
                Role(spec.role),
                _own_or(spec.requests_per_minute, rpm),
                _own_or(spec.tokens_per_minute, tpm),
            )
            entries.append((secret or bytes.fromhex(spec.sha256 or ""), caller))
        return cls(tuple(entries), Caller(ANONYMOUS_ID, None, rpm, tpm))

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (then every route but the probes needs one)."""
        return bool(self.digests)

    def caller_by_id(self, key_id: str) -> Caller:
        """The caller whose key has id `key_id` (a batch's owner); an inference caller with the
        default limits if that key is no longer configured."""
        for _, caller in self.digests:
            if caller.id == key_id:
                return caller
        if key_id == self.anonymous.id:
            return self.anonymous
        return Caller(key_id, Role.INFERENCE, self.anonymous.requests_per_minute,
                      self.anonymous.tokens_per_minute)  # fmt: skip

    def caller_of(self, key: str) -> Caller | None:
        """The caller `key` belongs to, or None; compares with every digest, never stopping early.

        A key listed both as inference and admin key is an admin key.
        """
        candidate = digest(key)
        found = None
        for known, caller in self.digests:
            if hmac.compare_digest(known, candidate) and (
                found is None or found.role is not Role.ADMIN
            ):
                found = caller
        return found


def _own_or(own: int | None, default: int | None) -> int | None:
    return default if own is None else own


def digest(key: str) -> bytes:
    """SHA-256 of a key: what is kept and compared."""
    return hashlib.sha256(key.encode()).digest()


def key_id(key_digest: bytes) -> str:
    """The id of a key given without one: the start of its digest, safe to log."""
    return "key-" + key_digest.hex()[:8]


def read_keys_file(path: Path | None) -> list[str]:
    """Keys of a file, one per line; blank lines and lines starting with # are skipped."""
    if path is None:
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class KeyAuth:
    """ASGI middleware: the key check in front of every route."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        open_paths: Iterable[str],
        admin_paths: Iterable[str],
    ):
        self.app = app
        self.keys = keys
        self.open_paths = frozenset(open_paths)
        self.admin_paths = tuple(admin_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        internal = scope.get(INTERNAL_CALLER)
        if internal is not None:  # a request this process makes itself (a batch line)
            state["caller"] = internal
            await self.app(scope, receive, send)
            return
        if not self.keys.enabled or scope["path"] in self.open_paths:
            state["caller"] = self.keys.anonymous
            await self.app(scope, receive, send)
            return
        caller = self.keys.caller_of(_bearer_token(scope) or "")
        error = self._refusal(scope, caller)
        if error is None:
            state["caller"] = caller  # read by require_admin, rate limits, usage and logs
            await self.app(scope, receive, send)
            return
        state["error"] = error.code
        headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else {}
        await api_error_response(error, headers)(scope, receive, send)

    def _refusal(self, scope: Scope, caller: Caller | None) -> APIError | None:
        if _bearer_token(scope) is None:
            return AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
            )
        if caller is None:
            return AuthenticationError("Incorrect API key provided.")
        if scope["path"].startswith(self.admin_paths) and caller.role is not Role.ADMIN:
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


def open_paths(settings: Settings, pages: Iterable[str]) -> list[str]:
    """Paths that answer without a key: the probes and `pages` (the playground: no secrets)."""
    probes = ["/health", "/ready"] if settings.open_probes else ["/health"]
    metrics = ["/metrics"] if settings.open_metrics else []
    return [*probes, *metrics, *pages]


def admin_paths(settings: Settings) -> list[str]:
    """Path prefixes that need an admin key."""
    return [*ADMIN_PREFIXES, *([] if settings.open_metrics else ["/metrics"])]


def owner_id(request: Request) -> str:
    """The key id that owns what this request creates (files, batches)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    return caller.id if caller is not None else ANONYMOUS_ID


def visible_owner(request: Request) -> str | None:
    """Whose files and batches this request may see: its key's, or (admin) everyone's (None)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None and caller.role is Role.ADMIN:
        return None
    return owner_id(request)


def require_admin(request: Request) -> None:
    """FastAPI dependency of the admin routes. With keys configured `KeyAuth` has already let
    only admin keys through; with none, only clients on this machine may call them."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None and caller.role is Role.ADMIN:
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
