"""The playground's files as the server serves and ships them (fake engine, no browser)."""

import re
import tomllib
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from server.api.routes.playground import PAGE_PATHS, PLAYGROUND_DIR
from server.app import create_app
from server.settings import load_settings
from tests.conftest import REPO
from tests.fakes import FakeEngine


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = load_settings(model="fake-org/fake", served_model_name="fake", api_keys="k")
    with TestClient(create_app(settings, lambda s, p: FakeEngine())) as c:
        yield c


def test_the_page_and_its_assets_are_served_without_a_key(client: TestClient) -> None:
    types = {"/": "text/html", ".js": "text/javascript", ".css": "text/css"}
    for path in PAGE_PATHS:
        response = client.get(path)
        assert response.status_code == 200, path
        kind = next(t for suffix, t in types.items() if path.endswith(suffix))
        assert response.headers["content-type"].startswith(kind), path
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert client.get("/playground/nothing.js").status_code == 401  # only the page is open


def test_the_page_loads_exactly_the_open_assets() -> None:
    html = (PLAYGROUND_DIR / "index.html").read_text()
    loaded = re.findall(r'(?:src|href)="(/[^"]*)"', html)
    assert sorted(["/", *loaded]) == sorted(PAGE_PATHS)


def test_the_page_is_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json", headers={"Authorization": "Bearer k"}).json()["paths"]
    assert not [path for path in paths if path in PAGE_PATHS]
    assert "/v1/chat/completions" in paths


def test_every_playground_file_is_package_data() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["server"]
    shipped = {path for pattern in patterns for path in (REPO / "server").glob(pattern)}
    assert shipped == set(PLAYGROUND_DIR.iterdir())
