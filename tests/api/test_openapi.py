"""The OpenAPI document on the fake engine: what each operation documents, and that replies
match the documented models (tests/api/test_fuzz.py checks the real server)."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from server.api import openapi
from tests.fakes import fake_client

KEY = {"Authorization": "Bearer admin-key"}
HI = [{"role": "user", "content": "hi"}]
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture
def keyed() -> Iterator[TestClient]:
    with fake_client(api_keys="user-key", admin_key="admin-key") as client:
        yield client


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_every_operation_documents_its_body_and_its_errors_and_no_422(keyed) -> None:
    document = keyed.get("/openapi.json", headers=KEY).json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    found = list(_operations(document))
    assert len(found) == 30
    for path, method, operation in found:
        statuses = operation["responses"]
        assert "422" not in statuses, (method, path)
        assert "500" in statuses, (method, path)
        ok = [s for s in statuses if s.startswith("2")]
        assert ok, (method, path)
        assert all(statuses[s]["content"] for s in ok), (method, path)
        for status, response in statuses.items():
            if status >= "400":
                assert response["content"]["application/json"]["schema"] == ERROR_REF


def test_the_key_is_documented_where_the_server_asks_for_it(keyed) -> None:
    document = keyed.get("/openapi.json", headers=KEY).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, method, operation in _operations(document):
        keyed_route = path not in ("/health", "/ready")
        assert ("security" in operation) == keyed_route, (method, path)
        assert ("401" in operation["responses"]) == keyed_route, (method, path)
        admin = path.startswith(("/v1/adapters", "/v1/usage", "/metrics"))
        assert ("403" in operation["responses"]) == admin, (method, path)
    with fake_client(api_keys="k", open_metrics=True, open_probes=False) as client:
        paths = client.get("/openapi.json", headers={"Authorization": "Bearer k"}).json()["paths"]
        assert set(paths["/metrics"]["get"]["responses"]) == {"200", "500"}
        assert "401" in paths["/ready"]["get"]["responses"]
    with fake_client() as open_server:  # no keys: nothing asks for one
        document = open_server.get("/openapi.json").json()
        assert "securitySchemes" not in document["components"]
        assert not any("401" in op["responses"] for _, _, op in _operations(document))


def test_generation_routes_document_streams_and_deadline_headers(keyed) -> None:
    paths = keyed.get("/openapi.json", headers=KEY).json()["paths"]
    for path, chunk in [
        ("/v1/chat/completions", "ChatCompletionChunk"),
        ("/v1/completions", "TextCompletionChunk"),
    ]:
        operation = paths[path]["post"]
        event = operation["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
        payload = event["properties"]["data"]["else"]["contentSchema"]
        assert payload["anyOf"] == [{"$ref": f"#/components/schemas/{chunk}"}, ERROR_REF]
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert headers == ["X-Request-Timeout", "X-Queue-Timeout"]
        assert {"400", "404", "408", "413", "429", "503"} <= set(operation["responses"])


def _events(client: TestClient, path: str, body: dict[str, Any]) -> list[Any]:
    with client.stream("POST", path, json=body | {"stream": True}, headers=KEY) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def _conforms(model: type[BaseModel], data: Any) -> None:
    model.model_validate(data)  # the documentation models forbid fields they do not name


def test_replies_conform_to_the_documented_models(keyed) -> None:
    chat = {"model": "fake", "messages": HI, "n": 2, "logprobs": True, "top_logprobs": 1}
    chat |= {"return_token_ids": True}
    _conforms(
        openapi.ChatCompletion, keyed.post("/v1/chat/completions", json=chat, headers=KEY).json()
    )
    usage = {"stream_options": {"include_usage": True}}
    for event in _events(keyed, "/v1/chat/completions", chat | usage):
        _conforms(openapi.ChatCompletionChunk, event)
    text = {"model": "fake", "prompt": ["a", "b"], "logprobs": 1, "return_token_ids": True}
    _conforms(openapi.TextCompletion, keyed.post("/v1/completions", json=text, headers=KEY).json())
    for event in _events(keyed, "/v1/completions", text | usage):
        _conforms(openapi.TextCompletionChunk, event)
    _conforms(openapi.ModelList, keyed.get("/v1/models", headers=KEY).json())
    _conforms(openapi.ModelCard, keyed.get("/v1/models/fake", headers=KEY).json())
    _conforms(openapi.Readiness, keyed.get("/ready").json())
    _conforms(openapi.Health, keyed.get("/health").json())
    _conforms(
        openapi.UsageReport, keyed.get("/v1/usage?group_by=day,key_id,model", headers=KEY).json()
    )
    missing = keyed.post("/v1/chat/completions", json=chat | {"model": "nope"}, headers=KEY)
    _conforms(openapi.ErrorResponse, missing.json())


def test_tools_and_structured_outputs_are_documented(keyed) -> None:
    schemas = keyed.get("/openapi.json", headers=KEY).json()["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    for name in ("tools", "tool_choice", "parallel_tool_calls", "response_format"):
        assert name in chat, name
    assert "structured_outputs" in schemas["CompletionRequest"]["properties"]
    assert set(schemas["ResponseFormat"]["properties"]["type"]["enum"]) == {
        "text",
        "json_object",
        "json_schema",
    }
    assert "tool_calls" in schemas["AssistantMessage"]["properties"]
    assert "tool_calls" in schemas["ChatDelta"]["properties"]
    assert "tool_calls" in json.dumps(schemas["ChatChoice"]["properties"]["finish_reason"])
