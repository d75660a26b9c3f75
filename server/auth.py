"""Who may call the admin API (`/v1/adapters`).

With `admin_key` set, admin routes need `Authorization: Bearer <admin key>` (compared as SHA-256
digests in constant time). Without one, only clients on the server's own machine (loopback) may
call them, so an unconfigured server never takes adapters from the network. Keys for the
inference routes come with the hardening work; `require_admin` is the one place to extend.
"""

import hashlib
import hmac
import ipaddress

from fastapi import Request

from server.errors import AuthenticationError, PermissionDeniedError
from server.state import State


def require_admin(request: Request, state: State) -> None:
    """FastAPI dependency: pass an admin, raise 401/403 for anyone else."""
    key = state.settings.admin_key
    if key is None:
        if not _is_loopback(request.client.host if request.client else None):
            raise PermissionDeniedError(
                "No admin key is configured, so the admin API answers only clients on the "
                "server's machine; set admin_key (KANGAROO_ADMIN_KEY) to use it remotely."
            )
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError(
            "The admin API needs an admin key: send the header 'Authorization: Bearer KEY'."
        )
    if not hmac.compare_digest(_digest(token.strip()), _digest(key.get_secret_value())):
        raise AuthenticationError("Incorrect admin key provided.")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
