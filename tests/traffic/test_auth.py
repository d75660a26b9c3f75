"""API keys on the fake engine: every route needs one, scopes, key files, constant-time compare."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from server.api.routes.playground import PAGE_PATHS
from server.contract import SettingsError
from server.settings import load_settings
from server.traffic import auth
from tests.fakes import fake_client

HI = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
USER = {"Authorization": "Bearer user-key"}
ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture
def keyed() -> Iterator[TestClient]:
    with fake_client(api_keys="user-key", admin_key="admin-key") as client:
        yield client


def _routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) of the app, path parameters filled in."""
    found = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        methods = route.methods if isinstance(route, APIRoute) else getattr(route, "methods", None)
        path = route.path.replace("{model_id:path}", "m").replace("{name}", "n")
        path = path.replace("{version}", "1")
        found += [(method, path) for method in sorted(methods or {"GET"}) if method != "HEAD"]
    return found


def test_every_route_but_the_probes_and_the_page_needs_a_key(keyed: TestClient) -> None:
    routes = _routes(keyed)
    assert len(routes) >= 12  # chat, completions, models, the admin API, docs, ...
    for method, path in routes:
        response = keyed.request(method, path)
        if path in ("/health", "/ready", *PAGE_PATHS):
            assert response.status_code == 200, path
            continue
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
    assert keyed.get("/no/such/route").status_code == 401  # unknown paths too


def test_wrong_keys_and_schemes_are_refused(keyed: TestClient) -> None:
    for header in ("Bearer nope", "Basic user-key", "user-key", "Bearer "):
        response = keyed.post("/v1/chat/completions", json=HI, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_inference_and_admin_scopes(keyed: TestClient) -> None:
    assert keyed.post("/v1/chat/completions", json=HI, headers=USER).status_code == 200
    assert keyed.post("/v1/chat/completions", json=HI, headers=ADMIN).status_code == 200
    refused = keyed.get("/v1/adapters", headers=USER)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    passed = keyed.get("/v1/adapters", headers=ADMIN)  # past the key check, to the route
    assert passed.status_code == 400
    assert "no adapter registry" in passed.json()["error"]["message"]


def _role(ring: auth.KeyRing, key: str) -> auth.Role | None:
    caller = ring.caller_of(key)
    return None if caller is None else caller.role


def test_keys_from_files(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# team A\nkey-a\n\n  key-b  \n")
    admins = tmp_path / "admins"
    admins.write_text("root-key\n")
    settings = load_settings(api_keys_file=users, admin_keys_file=admins)
    ring = auth.KeyRing.from_settings(settings)
    assert _role(ring, "key-a") is auth.Role.INFERENCE
    assert _role(ring, "key-b") is auth.Role.INFERENCE
    assert _role(ring, "root-key") is auth.Role.ADMIN
    assert ring.caller_of("# team A") is None
    with pytest.raises(SettingsError, match="api_keys_file"):
        load_settings(api_keys_file=tmp_path / "missing")


def test_keys_are_kept_as_digests_and_compared_in_constant_time(monkeypatch) -> None:
    ring = auth.KeyRing.from_settings(load_settings(api_keys="a,b,c", admin_key="d"))
    assert all(len(d) == 32 for d, _ in ring.digests)
    assert b"a" not in [d for d, _ in ring.digests]
    # A key's id, shown in logs and metrics, is the start of its digest, never the key.
    assert {c.id for _, c in ring.digests} == {auth.key_id(auth.digest(k)) for k in "abcd"}
    calls = []

    def spy(x: bytes, y: bytes) -> bool:
        calls.append((x, y))
        return x == y

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert _role(ring, "a") is auth.Role.INFERENCE
    assert len(calls) == 4  # every digest, also after the match


def test_ready_can_need_a_key_too() -> None:
    with fake_client(api_keys="user-key", open_probes=False) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 401


def test_no_keys_warns_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="server.app"), fake_client():
        pass
    assert "No API keys configured" in caplog.text
    assert load_settings().host == "127.0.0.1"
