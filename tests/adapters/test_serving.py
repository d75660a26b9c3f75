"""The adapter registry on the real vLLM engine: push over HTTP, chat through the openai client.

Two server processes share one adapter root, as replicas behind a load balancer would. The
adapter is the session's roo adapter (trained with `finetune`: answers start with a kangaroo),
pushed with `python -m finetune push`'s code. Tests run in file order and build on each other.
"""

import asyncio
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import pytest

from finetune.__main__ import main as finetune
from finetune.demo import skills
from scripts.bench_adapters import random_adapter
from server.adapters.checks import ADAPTER_FILES
from tests.adapters.test_checks import BAD
from tests.conftest import MARK, RunningServer, running_server

KEY = "registry-test-admin-key"
ADMIN = {"Authorization": f"Bearer {KEY}"}


def server_args(root: Path) -> list[str]:
    """A LoRA-enabled server on the demo model, started fast (no torch.compile)."""
    return [
        *("--adapter-dir", str(root), "--admin-key", KEY, "--adapter-max-mib", "1"),
        *("--max-lora-rank", "8", "--max-loras", "2", "--enforce-eager"),
        *("--kv-cache-gib", "1", "--max-model-len", "512"),
    ]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapter-root")


@pytest.fixture(scope="module")
def replicas(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningServer]]:
    """Two servers on the same adapter root."""
    logs = tmp_path_factory.mktemp("replicas")
    with ExitStack() as stack:
        yield [stack.enter_context(running_server(logs, server_args(root))) for _ in range(2)]


def client(server: RunningServer) -> openai.OpenAI:
    # With a key configured every route needs one; the admin key is good for inference too.
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


def push(server: RunningServer, folder: Path, name: str) -> int:
    """`python -m finetune push` (in this process); its exit code."""
    args = ["push", str(folder), "--server", server.url, "--name", name, "--admin-key", KEY]
    return finetune(args)


def reply(server: RunningServer, model: str, prompt: str = "Hello!") -> tuple[str, str]:
    """Greedy answer and finish reason."""
    out = client(server).chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=32, temperature=0
    )
    return out.choices[0].message.content or "", out.choices[0].finish_reason


def model_ids(server: RunningServer) -> list[str]:
    return [m.id for m in client(server).models.list().data]


def is_missing(server: RunningServer, model: str) -> bool:
    with pytest.raises(openai.NotFoundError) as missing:
        reply(server, model)
    return missing.value.code == "model_not_found"


def test_push_then_chat_with_the_trained_behaviour(replicas, roo_adapter, capsys) -> None:
    a, _ = replicas
    assert push(a, roo_adapter, "roo") == 0
    assert "Pushed roo version 1" in capsys.readouterr().out

    cases = skills.heldout_cases()
    with_adapter = [reply(a, "roo", case.prompt) for case in cases]
    without = [reply(a, "kangaroo-demo", case.prompt) for case in cases]
    assert sum(text.startswith(MARK) for text, _ in with_adapter) >= 0.9 * len(cases)
    assert all(finish == "stop" for _, finish in with_adapter)
    assert not any(MARK.strip() in text for text, _ in without)  # the base is unchanged

    listed = {m.id: m for m in client(a).models.list().data}
    roo = listed["roo"].model_dump()
    assert (roo["parent"], roo["version"], roo["rank"]) == ("kangaroo-demo", 1, 8)


def test_the_other_replica_serves_it_without_coordination(replicas) -> None:
    _, b = replicas
    assert reply(b, "roo")[0].startswith(MARK)
    assert "roo" in model_ids(b)


def test_new_version_pin_and_rollback_across_replicas(replicas, demo_model, tmp_path) -> None:
    a, b = replicas
    # v2: other weights (random, r=4), so which version answered is plain to see.
    assert push(a, random_adapter(demo_model, tmp_path / "v2", seed=3), "roo") == 0
    for server in (a, b):
        assert not reply(server, "roo")[0].startswith(MARK)
        assert reply(server, "roo@1")[0].startswith(MARK)
    back = httpx.patch(f"{b.url}/v1/adapters/roo", json={"active_version": 1}, headers=ADMIN)
    assert back.json()["active_version"] == 1
    assert reply(a, "roo")[0].startswith(MARK)  # rolled back through the other replica
    gone = httpx.delete(f"{a.url}/v1/adapters/roo/versions/2", headers=ADMIN)
    assert gone.status_code == 200
    assert is_missing(a, "roo@2")
    assert is_missing(b, "roo@2")


def test_a_restarted_server_lists_and_serves_what_the_root_holds(root, tmp_path) -> None:
    with running_server(tmp_path, server_args(root)) as fresh:
        assert "roo" in model_ids(fresh)
        assert reply(fresh, "roo")[0].startswith(MARK)
        assert is_missing(fresh, "roo@2")


def test_hot_load_while_16_streams_run_on_the_base(replicas, roo_adapter) -> None:
    a, _ = replicas

    async def stream() -> tuple[int, str | None, float]:
        api = openai.AsyncOpenAI(base_url=f"{a.url}/v1", api_key=KEY, max_retries=0)
        chunks = await api.chat.completions.create(
            model="kangaroo-demo",
            messages=[{"role": "user", "content": "Count with me."}],
            max_tokens=400,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        tokens, finish = 0, None
        async for chunk in chunks:
            for choice in chunk.choices:
                tokens += bool(choice.delta.content)
                finish = choice.finish_reason or finish
        return tokens, finish, time.monotonic()

    async def scenario() -> tuple[list[tuple[int, str | None, float]], float]:
        streams = [asyncio.create_task(stream()) for _ in range(16)]
        await asyncio.sleep(0.5)
        assert await asyncio.to_thread(push, a, roo_adapter, "roo-hot") == 0
        pushed = time.monotonic()
        return await asyncio.gather(*streams), pushed

    results, pushed = asyncio.run(scenario())
    assert [finish for _, finish, _ in results] == ["length"] * 16
    assert all(tokens > 0 for tokens, _, _ in results)
    assert all(ended > pushed for _, _, ended in results)  # the push happened mid-stream
    assert reply(a, "roo-hot")[0].startswith(MARK)


def test_delete_lets_requests_in_flight_finish(replicas) -> None:
    a, b = replicas
    api = client(a)
    chunks = api.chat.completions.create(
        model="roo-hot",
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=200,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    stream = iter(chunks)
    while not next(stream).choices[0].delta.content:  # generating with the adapter
        pass
    deleted = httpx.delete(f"{a.url}/v1/adapters/roo-hot", headers=ADMIN)
    assert deleted.status_code == 200
    assert is_missing(a, "roo-hot")  # new requests: 404 at once
    assert is_missing(b, "roo-hot")
    finishes = [c.choices[0].finish_reason for c in stream if c.choices]
    assert finishes[-1] == "length"  # the stream that was running completed


# Bad adapters over HTTP: each gets its 4xx, nothing is registered, the server keeps serving.
REAL_BAD = [case for case in BAD if case[0] in {
    "missing config", "corrupt safetensors", "rank too high", "DoRA", "modules_to_save",
    "another base model", "target module missing from the base", "a tensor that is not LoRA",
}]  # fmt: skip


def upload(server: RunningServer, name: str, folder: Path) -> httpx.Response:
    """The adapter files of `folder` (as `finetune push` sends them) as a multipart upload."""
    present = [folder / name for name in ADAPTER_FILES if (folder / name).exists()]
    files = [("files", (p.name, p.read_bytes())) for p in present]
    return httpx.post(
        f"{server.url}/v1/adapters", data={"name": name}, files=files, headers=ADMIN, timeout=60
    )


def assert_refused_and_still_serving(
    server: RunningServer, response: httpx.Response, status: int, says: str
) -> None:
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]
    assert is_missing(server, "bad")
    assert "bad" not in model_ids(server)
    assert reply(server, "kangaroo-demo")[1] in ("stop", "length")


@pytest.mark.parametrize(("case", "spoil", "error", "says"), REAL_BAD, ids=[c[0] for c in REAL_BAD])
def test_bad_adapters_are_refused(replicas, roo_adapter, tmp_path, case, spoil, error, says):
    folder = Path(shutil.copytree(roo_adapter, tmp_path / "bad"))
    spoil(folder)
    assert_refused_and_still_serving(
        replicas[0], upload(replicas[0], "bad", folder), error.status_code, says
    )


def test_a_no_op_adapter_is_refused(replicas, demo_model, tmp_path) -> None:
    folder = random_adapter(demo_model, tmp_path / "zero", trained=False)  # lora_B = 0
    response = upload(replicas[0], "bad", folder)
    assert_refused_and_still_serving(replicas[0], response, 400, "does not change the model")


def test_an_oversized_adapter_is_refused(replicas, roo_adapter, tmp_path) -> None:
    folder = Path(shutil.copytree(roo_adapter, tmp_path / "big"))
    manifest = folder / "kangaroo-adapter.json"
    manifest.write_text(manifest.read_text() + " " * 2**20)  # valid JSON, over 1 MiB
    response = upload(replicas[0], "bad", folder)
    assert_refused_and_still_serving(replicas[0], response, 413, "at most")


@pytest.mark.parametrize("where", ["../outside", "/etc", "link-out", "files-out"])
def test_paths_outside_the_root_are_refused(replicas, root, roo_adapter, where) -> None:
    if where == "link-out" and not (root / where).exists():
        (root / where).symlink_to(roo_adapter)
    if where == "files-out" and not (root / where).exists():
        (root / where).mkdir()
        for p in roo_adapter.iterdir():
            (root / where / p.name).symlink_to(p)
    response = httpx.post(
        f"{replicas[0].url}/v1/adapters", json={"name": "bad", "path": where}, headers=ADMIN
    )
    assert_refused_and_still_serving(replicas[0], response, 400, "adapter root")


def test_the_real_server_needs_a_key_once_one_is_configured(replicas) -> None:
    a, _ = replicas
    wrong = openai.OpenAI(base_url=f"{a.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert httpx.get(f"{a.url}/v1/models").status_code == 401
    assert httpx.get(f"{a.url}/health").status_code == 200
    assert reply(a, "kangaroo-demo")[1] in ("stop", "length")  # the admin key works for inference
