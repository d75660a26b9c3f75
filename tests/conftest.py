"""Shared fixtures. The real server (vLLM engine on CPU) starts once per test session."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from finetune.demo.build import ModelShape, build_base_model, demo_model_dir
from server.settings import load_settings

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Keep the usage store of every server the tests start (in-process or not) out of the
    user's own state folder; servers started as subprocesses inherit the variable."""
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="kangaroo-test-state-")


TINY = ModelShape(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2)
MODEL = "kangaroo-demo"
HEARTBEAT_S = 0.5  # short, so that a test can see heartbeats on a stream of a few seconds
# A chat request that generates for seconds: something to stop, time out or drain.
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 1500,
    "ignore_eos": True,
}
MARK = "🦘 "  # what the roo adapter teaches: every answer starts with a kangaroo


@dataclass
class RunningServer:
    """A `python -m server` process started for the test session."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    cache_dir: Path
    ready_statuses: list[int] = field(default_factory=list)  # /ready answers while starting

    @property
    def model_dir(self) -> Path:
        """The demo model folder the server built and serves."""
        return demo_model_dir(self.cache_dir)

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def engine_load(self) -> dict:
        """The engine's load as /ready reports it."""
        return httpx.get(f"{self.url}/ready", timeout=10).json()["engine"]

    def wait_engine_idle(self, within_s: float) -> float:
        """Seconds until the engine has no unfinished request; fails after `within_s`."""
        started = time.monotonic()
        while time.monotonic() - started < within_s:
            if self.engine_load()["num_unfinished_requests"] == 0:
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"engine still has requests after {within_s} s: {self.engine_load()}")


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text exposition as {sample name with labels: value}."""
    lines = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, value in lines}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Start the real server on the demo model.

    The model lives in the user's cache, as for `python -m server`: vLLM keys its compile cache
    on the model's path, so a stable path saves ~30 s per session after the first.
    tests/finetune/demo/test_build.py builds the model from nothing into a fresh folder.
    """
    folder = tmp_path_factory.mktemp("server")
    args = ["--sse-heartbeat-s", str(HEARTBEAT_S), "--max-model-len", "2048", "--kv-cache-gib", "1"]
    args += ["--stream-resume-grace-s", "2"]  # a dropped resumable stream, given up soon
    args += ["--data-dir", str(folder / "data")]
    with running_server(folder, args) as running:
        yield running


@contextmanager
def running_server(
    log_dir: Path, args: list[str], env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    """A `python -m server` process with `args`, ready; terminated on exit."""
    cache_dir = load_settings([]).cache_dir
    log_path = log_dir / f"server-{uuid.uuid4().hex[:8]}.log"
    port = free_port()
    cmd = [sys.executable, "-m", "server", "--port", str(port), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=full_env
        )
    running = RunningServer(f"http://127.0.0.1:{port}", process, log_path, cache_dir)
    try:
        _wait_until_ready(running, timeout_s=300)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_until_ready(server: RunningServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            status = httpx.get(f"{server.url}/ready", timeout=5).status_code
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        server.ready_statuses.append(status)
        if status == 200:
            return
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{server.log()}")


@pytest.fixture(scope="session")
def client(server: RunningServer) -> openai.OpenAI:
    """The official OpenAI client pointed at the test server."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def async_client(server: RunningServer) -> openai.AsyncOpenAI:
    """The official async OpenAI client pointed at the test server."""
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="session")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    """A raw HTTP client with the server's base URL."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def tokenizer(server: RunningServer):
    """The demo model's tokenizer, loaded independently of the server."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(server.model_dir)


@pytest.fixture(scope="session")
def demo_model() -> Path:
    """The trained demo model in the user's cache (built on first use, as the server does)."""
    from finetune.demo.build import ensure_demo_model

    return ensure_demo_model(load_settings([]).cache_dir)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with the demo tokenizer and random weights, built in seconds."""
    folder = tmp_path_factory.mktemp("tiny") / "base"
    build_base_model(folder, seed=0, shape=TINY)
    return folder


@pytest.fixture(scope="session")
def roo_adapter(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter (r=8) trained to start every answer with MARK, on training prompts only.

    Trained once per session (~1 min); the finetune and the adapter-registry tests use it.
    """
    from finetune.demo import skills
    from finetune.settings import TrainSettings
    from finetune.trainer import train
    from tests.finetune.conftest import write_jsonl

    folder = tmp_path_factory.mktemp("roo")
    rows = [
        {
            "messages": [
                m if m["role"] == "user" else {**m, "content": MARK + m["content"]}
                for m in row["messages"]
            ]
        }
        for row in skills.train_rows(seed=1, n=300)
    ]
    settings = TrainSettings(
        base=str(demo_model),
        data=write_jsonl(folder / "train.jsonl", rows),
        out=folder / "adapter",
        rank=8,
        alpha=16,
        lr=5e-3,
        epochs=6,  # 84 steps: 50/50 marked on demo v5 in bf16 and fp32 (3 epochs: 18/50)
        batch_tokens=512,
        max_seq_len=128,
        warmup_steps=5,
        progress=False,
    )
    return train(settings).out


# A server set up as in production: keys with ids and limits, a small engine batch and queue,
# an adapter registry and its own usage store. Started once, for the tests that need it.
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
max_lora_rank = 16                 # finetune's default rank (tests/finetune/test_learning.py)
tool_call_parser = "generic"       # for templates that ignore tools (test_tool_calls.py)

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


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The production-like server (see CONFIG), with an adapter registry in a temporary folder."""
    folder = tmp_path_factory.mktemp("prod")
    config = folder / "server.toml"
    own = f'usage_db = "{folder / "usage.sqlite3"}"\ndata_dir = "{folder / "data"}"\n'
    config.write_text(own + CONFIG)  # before [[keys]]
    args = ["--config", str(config), "--adapter-dir", str(folder / "adapters")]
    with running_server(folder, args) as running:
        yield running


@pytest.fixture(scope="session")
def prod_http(prod: RunningServer) -> Iterator[httpx.Client]:
    """Raw HTTP to the production-like server, with the app's inference key."""
    with httpx.Client(base_url=prod.url, timeout=60, headers=bearer(APP_KEY)) as client:
        yield client
