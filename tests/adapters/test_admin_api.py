"""The admin API and model routing over HTTP, on a fake engine (fast; no vLLM).

The fake engine marks output generated with an adapter as "[name@version] ...", so a test can
see which version served a request. tests/adapters/test_serving.py repeats the essentials
against the real engine.
"""

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scripts.bench_adapters import random_adapter
from server.adapters.checks import AdapterInfo
from server.adapters.store import AdapterStore, content_hash
from server.app import create_app
from server.settings import load_settings
from tests.fakes import FakeEngine

KEY = "admin-secret"
ADMIN = {"Authorization": f"Bearer {KEY}"}


def _app(tiny_base: Path, root: Path, fake: FakeEngine, **settings: Any) -> TestClient:
    fake.model_path = str(tiny_base)
    values = {"served_model_name": "base", "adapter_dir": root, "admin_key": KEY}
    app = create_app(
        load_settings(model=str(tiny_base), sse_heartbeat_s=0, **(values | settings)),
        lambda settings, path: fake,
    )
    return TestClient(app, raise_server_exceptions=False)


def _ready(client: TestClient) -> TestClient:
    for _ in range(500):
        if client.get("/ready").status_code == 200:
            return client
        threading.Event().wait(0.01)
    raise AssertionError("never ready")


@pytest.fixture
def fake() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(tiny_base: Path, tmp_path: Path, fake: FakeEngine) -> Iterator[TestClient]:
    with _app(tiny_base, tmp_path / "root", fake) as c:
        yield _ready(c)


@pytest.fixture(scope="module")
def adapters(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return [random_adapter(tiny_base, folder / f"a{seed}", seed=seed) for seed in range(2)]


def upload(client: TestClient, name: str, folder: Path, headers=ADMIN, **extra_files):
    files = [
        ("files", (p.name, p.read_bytes()))
        for p in sorted(folder.iterdir())
        if p.name != "README.md"
    ]
    files += [("files", (n, data)) for n, data in extra_files.items()]
    return client.post("/v1/adapters", data={"name": name}, files=files, headers=headers)


def chat(client: TestClient, model: str, headers=ADMIN):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/chat/completions", json=body, headers=headers)


def answer(client: TestClient, model: str) -> str:
    response = chat(client, model)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == model
    return response.json()["choices"][0]["message"]["content"]


def assert_error(response, status: int, code: str | None, says: str, param: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert says in error["message"], error["message"]
    if param is not None:
        assert error["param"] == param


def test_push_then_chat_list_version_rollback_delete(client, adapters, fake) -> None:
    first = upload(client, "support-bot", adapters[0])
    assert first.status_code == 201, first.text
    assert first.json() | {"sha256": "", "created": 0} == first.json() | {
        "model": "support-bot",
        "pinned_model": "support-bot@1",
        "version": 1,
        "new": True,
        "rank": 4,
        "eval_loss": 1.25,
        "sha256": "",
        "created": 0,
    }
    assert answer(client, "support-bot").startswith("[support-bot@1]")
    assert not answer(client, "base").startswith("[")  # the base model is untouched
    assert fake.adapters[-1].name == "support-bot@1"  # loaded at push, before any request
    assert fake.removed_adapters == [fake.adapters[0].lora_id]  # the probe's copy is gone

    models = client.get("/v1/models", headers=ADMIN).json()["data"]
    assert [(m["id"], m["parent"], m.get("version")) for m in models] == [
        ("base", None, None),
        ("support-bot", "base", 1),
    ]
    assert models[1]["rank"] == 4
    assert models[1]["eval_loss"] == 1.25

    assert upload(client, "support-bot", adapters[1]).json()["version"] == 2
    assert answer(client, "support-bot").startswith("[support-bot@2]")
    assert answer(client, "support-bot@1").startswith("[support-bot@1]")
    assert client.get("/v1/models/support-bot@1", headers=ADMIN).json()["version"] == 1

    same = upload(client, "support-bot", adapters[1])  # identical files: no new version
    assert (same.status_code, same.json()["version"], same.json()["new"]) == (200, 2, False)

    rolled = client.patch("/v1/adapters/support-bot", json={"active_version": 1}, headers=ADMIN)
    assert rolled.json()["active_version"] == 1
    assert answer(client, "support-bot").startswith("[support-bot@1]")

    deleted = client.delete("/v1/adapters/support-bot/versions/1", headers=ADMIN)
    assert deleted.json()["deleted"] is True
    assert_error(chat(client, "support-bot@1"), 404, "model_not_found", "support-bot@1", "model")
    assert answer(client, "support-bot").startswith("[support-bot@2]")  # newest remaining

    assert client.delete("/v1/adapters/support-bot", headers=ADMIN).json()["versions"] == [2]
    assert_error(chat(client, "support-bot"), 404, "model_not_found", "'support-bot'")
    assert [m["id"] for m in client.get("/v1/models", headers=ADMIN).json()["data"]] == ["base"]
    assert upload(client, "support-bot", adapters[0]).json()["version"] == 3  # never reused


def test_admin_listing(client, adapters) -> None:
    upload(client, "a", adapters[0])
    upload(client, "b", adapters[0])
    upload(client, "b", adapters[1])
    listed = client.get("/v1/adapters", headers=ADMIN).json()["data"]
    assert [(a["id"], a["active_version"], len(a["versions"])) for a in listed] == [
        ("a", 1, 1),
        ("b", 2, 2),
    ]
    assert client.get("/v1/adapters/b", headers=ADMIN).json()["versions"][0]["version"] == 1
    assert_error(client.get("/v1/adapters/nope", headers=ADMIN), 404, "model_not_found", "nope")


def test_unknown_models_get_openais_404(client) -> None:
    for model in ("nope", "nope@1", "base@1", "x@0", "x@-1", "x@one"):
        assert_error(chat(client, model), 404, "model_not_found", f"'{model}'", "model")


def test_version_numbers_no_file_name_or_int_can_hold_get_404(client, adapters) -> None:
    # Found while fuzzing the API: each of these was a 500.
    upload(client, "bot", adapters[0])
    huge = "9" * 300  # "v999..." is too long for a file name; 5,000 digits are too many for int()
    for model in ("bot@²", "bot@١", f"bot@{huge}", "bot@" + "1" * 5000):
        assert_error(chat(client, model), 404, "model_not_found", "does not exist", "model")
    got = client.get(f"/v1/models/bot@{huge}", headers=ADMIN)
    assert_error(got, 404, "model_not_found", huge, "model")
    rolled = client.patch("/v1/adapters/bot", json={"active_version": int(huge)}, headers=ADMIN)
    assert_error(rolled, 404, "model_not_found", huge, "active_version")
    deleted = client.delete(f"/v1/adapters/bot/versions/{huge}", headers=ADMIN)
    assert_error(deleted, 404, "model_not_found", huge, "version")
    assert answer(client, "bot@1").startswith("[bot@1]")


def test_model_names_never_reach_outside_the_root(client, tiny_base, tmp_path) -> None:
    # A complete registry version beside the root: a model id that walks there must not find it.
    beside = AdapterStore(tmp_path)
    folder = random_adapter(tiny_base, beside.new_staging(), seed=5)
    beside.commit("outside", folder, AdapterInfo(4, 8.0, ("q_proj",), 1, None), "0" * 64)
    for model in ("../outside", "../outside@1", "x/../../outside", ".staging"):
        assert_error(chat(client, model), 404, "model_not_found", "does not exist", "model")


def test_admin_routes_need_the_admin_key(client, adapters) -> None:
    assert_error(upload(client, "x", adapters[0], headers={}), 401, "invalid_api_key", "Bearer")
    wrong = {"Authorization": "Bearer nope"}
    assert_error(upload(client, "x", adapters[0], headers=wrong), 401, "invalid_api_key", "")
    for method, path in [("GET", "/v1/adapters"), ("DELETE", "/v1/adapters/x")]:
        assert client.request(method, path).status_code == 401
    assert chat(client, "x").status_code == 404  # nothing was registered


def test_an_inference_key_may_chat_but_not_administer(tiny_base, tmp_path, adapters) -> None:
    with _app(tiny_base, tmp_path / "root", FakeEngine(), api_keys="user-key") as c:
        _ready(c)
        user = {"Authorization": "Bearer user-key"}
        refused = upload(c, "x", adapters[0], headers=user)
        assert_error(refused, 403, "permission_denied", "admin key")
        assert chat(c, "base", headers=user).status_code == 200
        assert upload(c, "x", adapters[0]).status_code == 201  # the admin key may do both


def test_without_an_admin_key_only_this_machine_may_push(tiny_base, tmp_path, adapters) -> None:
    with _app(tiny_base, tmp_path / "root", FakeEngine(), admin_key=None) as remote:
        _ready(remote)  # TestClient's peer is "testclient", not a loopback address
        assert_error(upload(remote, "x", adapters[0], headers={}), 403, "permission_denied", "")
        assert chat(remote, "base", headers={}).status_code == 200  # no keys: inference is open


BAD_UPLOADS = [
    ("a pickle", {"adapter_model.bin": b"\x80\x04"}, "pickle file"),
    ("an unexpected file", {"run.sh": b"echo"}, "Unexpected file 'run.sh'"),
    ("a path in the file name", {"../adapter_config.json": b"{}"}, "Unexpected file"),
]


@pytest.mark.parametrize(("case", "extra", "says"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_register_nothing(client, adapters, case, extra, says) -> None:
    assert_error(upload(client, "x", adapters[0], **extra), 400, None, says, "files")
    assert chat(client, "x").status_code == 404
    assert answer(client, "base")  # the server keeps serving


def test_bad_names_and_the_base_models_id_are_refused(client, adapters, tmp_path) -> None:
    assert_error(upload(client, "Bad Name", adapters[0]), 400, None, "'Bad Name'", "name")
    assert_error(upload(client, "base", adapters[0]), 400, None, "base model's id", "name")
    assert not list((tmp_path / "root" / ".staging").iterdir())  # the uploads were discarded


def test_an_oversized_upload_is_refused_before_it_is_read(tiny_base, tmp_path, adapters) -> None:
    with _app(tiny_base, tmp_path / "root", FakeEngine(), adapter_max_mib=1) as c:
        _ready(c)
        big = {"kangaroo-adapter.json": b" " * 2**21}
        assert_error(upload(c, "x", adapters[0], **big), 413, "request_too_large", "at most")


def test_push_by_path_inside_the_root_only(client, adapters, tmp_path) -> None:
    root = tmp_path / "root"
    inside = root / "incoming" / "bot"
    inside.parent.mkdir()
    shutil.copytree(adapters[0], inside)
    pushed = client.post(
        "/v1/adapters", json={"name": "bot", "path": "incoming/bot"}, headers=ADMIN
    )
    assert pushed.status_code == 201, pushed.text
    assert answer(client, "bot").startswith("[bot@1]")
    assert (inside / "adapter_config.json").exists()  # the user's folder is left alone

    outside = str(adapters[1])
    (root / "linked").symlink_to(adapters[1])  # a folder link out of the root
    escaped = root / "escaped"  # a folder in the root whose files link out
    escaped.mkdir()
    for p in adapters[1].iterdir():
        (escaped / p.name).symlink_to(p)
    # A NUL byte and a name too long for the file system were 500s (found while fuzzing).
    for path in ("../x", outside, "linked", "escaped", ".staging", "a\x00b", "a" * 300):
        refused = client.post("/v1/adapters", json={"name": "x", "path": path}, headers=ADMIN)
        assert_error(refused, 400, None, "adapter root", "path")
    assert chat(client, "x").status_code == 404


def test_versions_written_by_another_replica_are_served(client, tiny_base, tmp_path) -> None:
    # Another replica shares the root: it commits v1 of "other" while this one runs.
    store = AdapterStore(tmp_path / "root")
    folder = store.new_staging()
    random_adapter(tiny_base, folder, seed=7)
    info = AdapterInfo(4, 8.0, ("q_proj", "v_proj"), 1, None)
    store.commit("other", folder, info, content_hash(folder))
    assert answer(client, "other").startswith("[other@1]")
    assert "other" in [m["id"] for m in client.get("/v1/models", headers=ADMIN).json()["data"]]


def test_a_corrupt_version_on_disk_is_skipped_at_start_up(tiny_base, tmp_path, adapters) -> None:
    root = tmp_path / "root"
    with _app(tiny_base, root, FakeEngine()) as c:
        upload(_ready(c), "bot", adapters[0])
        upload(c, "bot", adapters[1])
    (root / "bot" / "v2" / "adapter_model.safetensors").write_bytes(b"garbage")
    with _app(tiny_base, root, FakeEngine()) as c:
        assert answer(_ready(c), "bot@1").startswith("[bot@1]")
        assert_error(chat(c, "bot"), 404, "model_not_found", "fail the checks")
