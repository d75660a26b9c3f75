"""/metrics, the request log and the body limit, on the real engine."""

import json
import time
import uuid

import httpx

from tests.conftest import ADMIN_KEY, APP_KEY, MODEL, RunningServer, bearer, metric_samples

# Long enough to fill whole KV blocks (the prefix cache keeps only full blocks; 128 tokens on CPU).
PROMPT = " ".join(["Tell me the color of a banana, please, and then the color of the sky."] * 20)


def _metrics(prod: RunningServer) -> dict[str, float]:
    return metric_samples(httpx.get(f"{prod.url}/metrics", headers=bearer(ADMIN_KEY)).text)


def test_metrics_show_latencies_tokens_and_the_engine_caches(prod_http: httpx.Client, prod) -> None:
    before = _metrics(prod)
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}
    body["ignore_eos"] = True
    for _ in range(3):  # the same prompt: later ones find its blocks in the prefix cache
        assert prod_http.post("/v1/chat/completions", json=body).status_code == 200
    after = _metrics(prod)

    def grew(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    model = f'model="{MODEL}"'
    assert grew(f"kangaroo_time_to_first_token_seconds_count{{{model}}}") == 3
    assert grew(f"kangaroo_e2e_request_latency_seconds_count{{{model}}}") == 3
    assert grew(f"kangaroo_queue_time_seconds_count{{{model}}}") == 3
    # One gap between consecutive outputs; an output may carry several tokens.
    assert 3 <= grew(f"kangaroo_inter_token_latency_seconds_count{{{model}}}") <= 3 * 7
    assert grew(f'kangaroo_completion_tokens_total{{key_id="app",mode="live",{model}}}') == 24
    route = f'{model},route="/v1/chat/completions",status="200"'
    assert grew(f"kangaroo_http_requests_total{{{route}}}") == 3
    assert grew("kangaroo_prefix_cache_queries_total") > 0
    assert grew("kangaroo_prefix_cache_hits_total") > 0
    assert 0 <= after["kangaroo_kv_cache_usage_ratio"] <= 1
    assert after["kangaroo_engine_ready"] == 1
    assert after["kangaroo_draining"] == 0


def test_every_request_is_one_json_log_line_without_the_key(prod_http: httpx.Client, prod) -> None:
    request_id = f"log-check-{uuid.uuid4().hex[:8]}"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    reply = prod_http.post("/v1/chat/completions", json=body, headers={"X-Request-ID": request_id})
    assert reply.headers["x-request-id"] == request_id
    lines = _log_lines(prod, request_id)
    assert len(lines) == 1
    line = lines[0]
    assert line["logger"] == "kangaroo.requests"
    assert line["key_id"] == "app"
    assert line["model"] == MODEL
    assert line["status"] == 200
    assert line["outcome"] == "completed"
    assert line["prompt_tokens"] == reply.json()["usage"]["prompt_tokens"]
    assert line["completion_tokens"] == reply.json()["usage"]["completion_tokens"]
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert APP_KEY not in prod.log()
    assert ADMIN_KEY not in prod.log()


def _log_lines(prod: RunningServer, text: str, within_s: float = 5.0) -> list[dict]:
    """The server's log lines holding `text`; the line is written once the response has ended,
    which can be just after the client has it."""
    deadline = time.monotonic() + within_s
    while True:
        lines = [json.loads(line) for line in prod.log().splitlines() if text in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_body_over_the_limit_is_refused_before_it_is_read(prod_http: httpx.Client) -> None:
    huge = "x" * (9 * 2**20)  # the default limit is 8 MiB
    body = {"model": MODEL, "messages": [{"role": "user", "content": huge}]}
    refused = prod_http.post("/v1/chat/completions", json=body)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "request_too_large"
    assert "8 MiB" in refused.json()["error"]["message"]


def test_a_prompt_longer_than_the_context_never_reaches_the_engine(
    prod_http: httpx.Client,
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "word " * 3000}]}
    refused = prod_http.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400
    assert "maximum context length is 2048 tokens" in refused.json()["error"]["message"]


def test_the_engine_schedules_a_step_while_the_model_runs_one(prod) -> None:
    # On by default, on CPU too, where vLLM's own default is off (server/engine/vllm_engine.py).
    [line] = _log_lines(prod, "Async scheduling")
    assert line["message"] == "Async scheduling: on"


def test_the_start_up_heap_is_frozen_out_of_the_garbage_collectors_reach(prod) -> None:
    # vLLM and torch leave some 670,000 objects a full collection would scan (420 ms measured).
    [line] = _log_lines(prod, "start-up objects")
    frozen = int(line["message"].split()[1])
    assert frozen > 100_000
