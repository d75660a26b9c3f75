"""The Files API on the fake engine (fast): the official client's calls, ownership between keys,
cursor pages, bad uploads; and once on the real production-like server."""

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_KEY, APP_KEY, USAGE_KEY, RunningServer, bearer
from tests.fakes import fake_client

LINES = b"".join(
    json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}).encode()
    + b"\n"
    for i in range(3)
)


@pytest.fixture
def keyed() -> Iterator[TestClient]:
    with fake_client(api_keys="key-a,key-b", admin_key="admin-key", file_max_mib=1) as client:
        yield client


def _client(http: httpx.Client, key: str, base_url: str = "http://testserver/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, http_client=http, max_retries=0)


def _upload(http: TestClient, key: str, data: bytes = LINES, name: str = "in.jsonl") -> str:
    reply = http.post(
        "/v1/files",
        headers=bearer(key),
        files={"file": (name, data, "application/jsonl")},
        data={"purpose": "batch"},
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def test_the_official_client_uploads_lists_reads_and_deletes(keyed: TestClient) -> None:
    client = _client(keyed, "key-a")
    created = client.files.create(file=("in.jsonl", io.BytesIO(LINES)), purpose="batch")
    assert (created.object, created.purpose, created.status) == ("file", "batch", "processed")
    assert (created.bytes, created.filename) == (len(LINES), "in.jsonl")
    assert created.id.startswith("file-")
    assert len(created.id) == 29
    assert client.files.wait_for_processing(created.id).id == created.id
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == LINES
    assert [f.id for f in client.files.list()] == [created.id]
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    assert list(client.files.list()) == []


def test_a_key_sees_only_its_own_files_and_an_admin_sees_all(keyed: TestClient) -> None:
    mine, theirs = _upload(keyed, "key-a"), _upload(keyed, "key-b")
    a, b = _client(keyed, "key-a"), _client(keyed, "key-b")
    for call in (a.files.retrieve, a.files.content, a.files.delete):
        with pytest.raises(openai.NotFoundError) as err:
            call(theirs)
        assert err.value.status_code == 404
        assert err.value.body["param"] == "file_id"  # type: ignore[index]
    assert [f.id for f in a.files.list()] == [mine]
    assert [f.id for f in b.files.list()] == [theirs]  # key-a's failed delete left it there
    admin = _client(keyed, "admin-key")
    assert {f.id for f in admin.files.list()} == {mine, theirs}
    assert admin.files.content(mine).read() == LINES


def test_pages_follow_the_cursor_both_ways(keyed: TestClient) -> None:
    ids = [_upload(keyed, "key-a", name=f"{i}.jsonl") for i in range(5)]
    _upload(keyed, "key-b")
    page = keyed.get("/v1/files?limit=2&order=asc", headers=bearer("key-a")).json()
    assert [f["id"] for f in page["data"]] == ids[:2]
    assert (page["first_id"], page["last_id"], page["has_more"]) == (ids[0], ids[1], True)
    rest = keyed.get(f"/v1/files?limit=3&order=asc&after={ids[1]}", headers=bearer("key-a"))
    assert [f["id"] for f in rest.json()["data"]] == ids[2:]
    assert rest.json()["has_more"] is False
    newest = keyed.get("/v1/files?limit=2", headers=bearer("key-a")).json()
    assert [f["id"] for f in newest["data"]] == ids[:2:-1][:2]
    # The official client walks every page.
    assert [f.id for f in _client(keyed, "key-a").files.list(limit=2, order="asc")] == ids
    # A cursor the key cannot see is not a way to probe ids.
    theirs = keyed.get("/v1/files", headers=bearer("key-b")).json()["data"][0]["id"]
    probe = keyed.get(f"/v1/files?after={theirs}", headers=bearer("key-a"))
    assert probe.status_code == 404
    assert probe.json()["error"]["param"] == "after"


@pytest.mark.parametrize(
    ("form", "files", "status", "param"),
    [
        ({"purpose": "fine-tune"}, {"file": ("a.jsonl", LINES)}, 400, "purpose"),
        ({}, {"file": ("a.jsonl", LINES)}, 400, "purpose"),
        ({"purpose": "batch"}, {}, 400, "file"),
        ({"purpose": "batch", "file": "not a file"}, {}, 400, "file"),
        ({"purpose": "batch"}, {"file": ("big.jsonl", b"x" * (3 * 2**19))}, 413, None),
        (
            {"purpose": "batch", "expires_after[seconds]": "3600"},
            {"file": ("a.jsonl", LINES)},
            400,
            "expires_after[seconds]",
        ),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_kept(
    keyed: TestClient, form: dict, files: dict, status: int, param: str | None
) -> None:
    reply = keyed.post("/v1/files", headers=bearer("key-a"), data=form, files=files or None)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param
    assert (param or "file_max_mib") in error["message"]
    assert keyed.get("/v1/files", headers=bearer("key-a")).json()["data"] == []
    folder = Path(keyed.app.state.kangaroo.settings.data_dir) / "files"  # type: ignore[attr-defined]
    assert list(folder.iterdir()) == []


def test_a_non_multipart_upload_is_a_400(keyed: TestClient) -> None:
    reply = keyed.post("/v1/files", headers=bearer("key-a"), json={"purpose": "batch"})
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_files_on_the_real_server(prod: RunningServer) -> None:
    with httpx.Client(timeout=30) as http:
        app = _client(http, APP_KEY, f"{prod.url}/v1")
        other = _client(http, USAGE_KEY, f"{prod.url}/v1")
        created = app.files.create(file=("real.jsonl", io.BytesIO(LINES)), purpose="batch")
        assert app.files.content(created.id).read() == LINES
        with pytest.raises(openai.NotFoundError):
            other.files.retrieve(created.id)
        assert created.id in {f.id for f in _client(http, ADMIN_KEY, f"{prod.url}/v1").files.list()}
        app.files.delete(created.id)
        assert created.id not in {f.id for f in app.files.list()}
