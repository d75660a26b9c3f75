"""Keys, rate limits and usage accounting on the real engine."""

import httpx
import openai

from tests.conftest import (
    ADMIN_KEY,
    APP_KEY,
    LIMITED_KEY,
    MODEL,
    TOKENS_KEY,
    USAGE_KEY,
    RunningServer,
    bearer,
)

HI = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}


def test_the_request_after_the_limit_gets_429_with_retry_after(prod: RunningServer) -> None:
    with httpx.Client(base_url=prod.url, headers=bearer(LIMITED_KEY), timeout=60) as http:
        answers = [http.post("/v1/chat/completions", json=HI) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["2", "1", "0", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in answers)
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    assert 15 <= int(refused.headers["retry-after"]) <= 20  # one request per 20 s
    assert "'limited'" in refused.json()["error"]["message"]


def test_the_token_budget_holds_prompt_and_max_tokens(prod: RunningServer) -> None:
    with httpx.Client(base_url=prod.url, headers=bearer(TOKENS_KEY), timeout=60) as http:
        first = http.post("/v1/chat/completions", json=HI | {"max_tokens": 200, "ignore_eos": True})
        second = http.post("/v1/chat/completions", json=HI | {"max_tokens": 200})
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    assert second.status_code == 429, second.text
    assert second.json()["error"]["type"] == "tokens"
    message = second.json()["error"]["message"]
    assert "limit 300" in message
    remaining = int(message.split("remaining ")[1].split(",")[0])
    assert 300 - used <= remaining < 300 - used + 20  # what it used, less what refilled since


def test_usage_equals_what_the_responses_reported(prod: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{prod.url}/v1", api_key=USAGE_KEY, max_retries=0)
    reported = []
    reply = client.chat.completions.create(messages=HI["messages"], model=MODEL, max_tokens=20)
    reported.append(reply.usage)
    stream = client.chat.completions.create(
        messages=[{"role": "user", "content": "Which number follows six?"}],
        model=MODEL,
        stream=True,
        stream_options={"include_usage": True},
    )
    reported.append([chunk for chunk in stream][-1].usage)
    several = client.completions.create(model=MODEL, prompt=["a b", "c d e"], n=2, max_tokens=5)
    reported.append(several.usage)
    prompt = sum(u.prompt_tokens for u in reported if u)
    completion = sum(u.completion_tokens for u in reported if u)

    with httpx.Client(base_url=prod.url, headers=bearer(ADMIN_KEY), timeout=60) as admin:
        rows = admin.get("/v1/usage").json()["data"]
        metrics = admin.get("/metrics").text
    (row,) = [r for r in rows if r["key_id"] == "usage-check"]
    assert row == {
        "key_id": "usage-check",
        "model": MODEL,
        "mode": "live",
        "requests": 3,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    labels = f'key_id="usage-check",mode="live",model="{MODEL}"'
    assert f"kangaroo_completion_tokens_total{{{labels}}} {float(completion)}" in metrics
    assert f"kangaroo_prompt_tokens_total{{{labels}}} {float(prompt)}" in metrics


def test_inference_keys_cannot_read_usage_or_metrics(prod_http: httpx.Client) -> None:
    for path in ("/v1/usage", "/metrics"):
        refused = prod_http.get(path)
        assert refused.status_code == 403, path
        assert refused.json()["error"]["code"] == "permission_denied"
    assert httpx.get(f"{prod_http.base_url}/metrics").status_code == 401
    assert prod_http.get("/v1/models").status_code == 200
    assert APP_KEY not in prod_http.get("/v1/models").text
