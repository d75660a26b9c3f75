"""A server set up as in production: keys with ids and limits, a small engine batch and queue,
an adapter registry and its own usage store. Started once for the tests of this folder."""

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import RunningServer, running_server

APP_KEY = "app-key-0123456789"  # inference key, id "app", no limits
ADMIN_KEY = "admin-key-0123456789"  # admin key, id "ops"
LIMITED_KEY = "limited-key-0123456789"  # id "limited": 3 requests a minute
TOKENS_KEY = "tokens-key-0123456789"  # id "tokens": 300 tokens a minute
USAGE_KEY = "usage-key-0123456789"  # id "usage-check": used only by the usage test
MAX_RUNNING = 4  # max_num_seqs: sequences generating at once
MAX_WAITING = 4  # max_waiting_requests

CONFIG = f"""
max_num_seqs = {MAX_RUNNING}
max_waiting_requests = {MAX_WAITING}
max_model_len = 2048
max_queue_wait_s = 20
request_timeout_s = 60
kv_cache_gib = 1
enforce_eager = true
max_lora_rank = 8

[[keys]]
id = "app"
key = "{APP_KEY}"

[[keys]]
id = "ops"
key = "{ADMIN_KEY}"
role = "admin"

[[keys]]
id = "limited"
key = "{LIMITED_KEY}"
requests_per_minute = 3

[[keys]]
id = "tokens"
key = "{TOKENS_KEY}"
tokens_per_minute = 300

[[keys]]
id = "usage-check"
key = "{USAGE_KEY}"
"""


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for `key`."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="package")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The production-like server (see CONFIG), with an adapter registry in a temporary folder."""
    folder = tmp_path_factory.mktemp("prod")
    config = folder / "server.toml"
    config.write_text(f'usage_db = "{folder / "usage.sqlite3"}"\n' + CONFIG)  # before [[keys]]
    args = ["--config", str(config), "--adapter-dir", str(folder / "adapters")]
    with running_server(folder, args) as running:
        yield running


@pytest.fixture(scope="package")
def prod_http(prod: RunningServer) -> Iterator[httpx.Client]:
    """Raw HTTP to the production-like server, with the app's inference key."""
    with httpx.Client(base_url=prod.url, timeout=60, headers=bearer(APP_KEY)) as client:
        yield client
