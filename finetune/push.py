"""`python -m finetune push OUT --server URL --name NAME`: send an adapter to a running server.

The server checks it (files, rank, target modules, base model), probes that it changes the
model's output, stores it as the newest version of NAME and loads it: any OpenAI client can then
use `model=NAME` (or `NAME@VERSION`). The admin key comes from --admin-key or KANGAROO_ADMIN_KEY.
"""

from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import CliPositionalArg, SettingsConfigDict

from server.contract import ADAPTER_FILES, WEIGHTS_NAME, KangarooError, LayeredSettings


class PushSettings(LayeredSettings):
    """What `finetune push` needs."""

    model_config = SettingsConfigDict(env_prefix="KANGAROO_", cli_prog_name="finetune push")

    folder: CliPositionalArg[Path] = Field(description="Adapter folder written by finetune train.")
    name: str = Field(description="Adapter name clients will send as `model`.")
    server: str = Field("http://127.0.0.1:8000", description="Base URL of the Kangaroo server.")
    admin_key: SecretStr | None = Field(None, description="Admin key (env KANGAROO_ADMIN_KEY).")
    timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for the server's answer.")


class PushError(KangarooError):
    """The server refused the adapter or could not be reached; the message says why."""


def push(settings: PushSettings) -> dict[str, Any]:
    """Upload the adapter files; the server's description of the stored version."""
    files = [settings.folder / name for name in ADAPTER_FILES if (settings.folder / name).is_file()]
    if not any(f.name == WEIGHTS_NAME for f in files):
        raise PushError(f"{settings.folder} holds no {WEIGHTS_NAME}.")
    headers = {}
    if settings.admin_key is not None:
        headers["Authorization"] = f"Bearer {settings.admin_key.get_secret_value()}"
    handles = [path.open("rb") for path in files]  # only these: not metrics.jsonl, loss.png
    parts = [("files", (path.name, handle)) for path, handle in zip(files, handles, strict=True)]
    try:
        response = httpx.post(
            f"{settings.server.rstrip('/')}/v1/adapters",
            data={"name": settings.name},
            files=parts,
            headers=headers,
            timeout=settings.timeout_s,
        )
    except httpx.HTTPError as exc:
        raise PushError(f"Could not reach {settings.server}: {exc}") from None
    finally:
        for handle in handles:
            handle.close()
    body: dict[str, Any] = response.json() if response.content else {}
    if response.status_code >= 400:
        message = (body.get("error") or {}).get("message", response.text)
        raise PushError(f"The server refused the adapter ({response.status_code}): {message}")
    return body
