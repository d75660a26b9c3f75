"""Bad input on the real server: the right 4xx, OpenAI's envelope, and serving goes on."""

import httpx
import pytest

from tests.conftest import MODEL

HI = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"

# (path, body, status, param, words the message must contain)
CASES = [
    (CHAT, {"model": MODEL, "messages": []}, 400, "messages", ["messages", "[]"]),
    (CHAT, {"model": MODEL}, 400, "messages", ["messages"]),
    (CHAT, {"model": "gpt-4o", "messages": HI}, 404, "model", ["gpt-4o"]),
    (CHAT, {"model": MODEL, "messages": HI, "temperature": 3}, 400, "temperature", ["3"]),
    (CHAT, {"model": MODEL, "messages": HI, "temperature": "hot"}, 400, "temperature", ["hot"]),
    (CHAT, {"model": MODEL, "messages": HI, "top_p": 0}, 400, "top_p", ["0"]),
    # Past int64 the engine cannot receive a seed: it was a 500 (found while fuzzing).
    (CHAT, {"model": MODEL, "messages": HI, "seed": 2**63}, 400, "seed", [str(2**63)]),
    (CHAT, {"model": MODEL, "messages": HI, "seed": -(2**63) - 1}, 400, "seed", ["-9223"]),
    (CHAT, {"model": MODEL, "messages": HI, "max_tokens": 0}, 400, "max_tokens", ["0"]),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "max_tokens": 4000},
        400,
        "max_tokens",
        ["2048", "4000"],
    ),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "max_completion_tokens": 9999},
        400,
        "max_completion_tokens",
        ["2048", "9999"],
    ),
    (
        CHAT,
        {"model": MODEL, "messages": [{"role": "user", "content": "word " * 3000}]},
        400,
        "messages",
        ["2048"],
    ),
    (CHAT, {"model": MODEL, "messages": HI, "n": 0}, 400, "n", ["0"]),
    (CHAT, {"model": MODEL, "messages": HI, "top_logprobs": 3}, 400, "top_logprobs", ["logprobs"]),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "top_logprobs": 50, "logprobs": True},
        400,
        "top_logprobs",
        ["50"],
    ),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "logit_bias": {"999999": 5}},
        400,
        "logit_bias",
        ["999999"],
    ),
    (CHAT, {"model": MODEL, "messages": HI, "logit_bias": {"abc": 5}}, 400, "logit_bias", ["abc"]),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "logit_bias": {"5": 500}},
        400,
        "logit_bias.5",
        ["500"],
    ),
    (CHAT, {"model": MODEL, "messages": HI, "stop": ""}, 400, "stop", ["stop"]),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "tools": [{"type": "function"}]},
        400,
        "tools.0.function",
        ["tools.0.function", "Missing"],
    ),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "response_format": {"type": "xml"}},
        400,
        "response_format.type",
        ["xml"],
    ),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "functions": [{"name": "f"}]},
        400,
        "functions",
        ["functions", "not supported"],
    ),
    (
        CHAT,
        {"model": MODEL, "messages": HI, "stream_options": {"include_usage": True}},
        400,
        "stream_options",
        ["stream"],
    ),
    (CHAT, {"model": MODEL, "messages": HI, "frobnicate": 1}, 400, "frobnicate", ["frobnicate"]),
    (
        CHAT,
        {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages.0.role",
        ["wizard"],
    ),
    (
        CHAT,
        {"model": MODEL, "messages": [{"role": "user"}]},
        400,
        "messages.0.content",
        ["content"],
    ),
    (
        CHAT,
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "messages.0.content.0.type",
        ["image_url"],
    ),
    (CHAT, {"model": MODEL, "messages": HI, "modalities": ["audio"]}, 400, "modalities", ["audio"]),
    ("/v1/completions", {"model": MODEL, "prompt": ""}, 400, "prompt", ["empty"]),
    ("/v1/completions", {"model": MODEL, "prompt": []}, 400, "prompt", ["empty"]),
    ("/v1/completions", {"model": MODEL, "prompt": [[1, 2], [99999]]}, 400, "prompt", ["99999"]),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "echo": True}, 400, "echo", ["echo"]),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "best_of": 3}, 400, "best_of", ["best_of"]),
    ("/v1/completions", {"model": MODEL, "prompt": "x", "logprobs": 9}, 400, "logprobs", ["9"]),
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model", ["nope"]),
]


@pytest.mark.parametrize(("path", "body", "status", "param", "words"), CASES)
def test_bad_request_gets_its_status_and_envelope(
    http: httpx.Client, path: str, body: dict, status: int, param: str, words: list[str]
) -> None:
    for stream in (False, True):
        r = http.post(
            path, json=body | {"stream": stream} if "stream_options" not in body else body
        )
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == param
        assert error["type"] == "invalid_request_error"
        for word in words:
            assert word in error["message"], error["message"]
    if status == 404:
        assert error["code"] == "model_not_found"


def test_malformed_json_is_400(http: httpx.Client) -> None:
    r = http.post(CHAT, content=b'{"model": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"]


def test_unknown_route_and_method_use_the_envelope(http: httpx.Client) -> None:
    assert http.get("/v1/nothing-here").json()["error"]["code"] == "not_found"
    r = http.get(CHAT)
    assert r.status_code == 405
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_server_keeps_serving_after_bad_requests(http: httpx.Client) -> None:
    for path, body, *_ in CASES:
        http.post(path, json=body)
    r = http.post(CHAT, json={"model": MODEL, "messages": HI, "max_tokens": 3})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
