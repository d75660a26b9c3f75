"""Structured outputs and tool calls under load: what the constraint costs.

    python scripts/bench_structured.py --out scripts/results/structured

Starts our server on the demo model and measures, on the same machine and server:

1. throughput at `--streams` concurrent streams of requests constrained by a JSON schema
   against the same requests unconstrained (target: >= 0.9x);
2. time to first token of a schema the server has never seen (xgrammar compiles it) against
   the same schema again (cached), one request at a time;
3. tool-call requests (`tool_choice: required`, arguments held to the tool's schema) against
   plain requests with the same prompt (tools listed, `tool_choice: none`) and as many output
   tokens as the call, at `--streams` streams. A call's first streamed delta comes once the
   parser has read the tool's name, several tokens in, so its TTFT is later by design.

4. the CPU kernel that applies grammar token masks to the logits, vLLM's worker's step by step:
   ours (server/engine/cpu_bitmask.py, loaded into vLLM as a plugin) against xgrammar's own, on
   16 rows of masks that allow a few tokens each, at the demo model's vocabulary and at 32k and
   128k (what real models have).

Each comparison runs its two sides in turn (ABAB, `--repeats` times); figures are medians.
With `--vllm` the first comparison runs again on vLLM's own server (`vllm serve`, same model and
engine settings): what the same constraint costs there.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench import (  # noqa: E402
    SERVED_NAME,
    EngineSettings,
    free_port,
    kangaroo_cmd,
    prepare_model,
    running_server,
    vllm_server_cmd,
)
from scripts.bench_report import alternate, summarize  # noqa: E402
from scripts.loadgen import client_session, stream_chat  # noqa: E402

MODEL = SERVED_NAME
QUESTION = [{"role": "user", "content": "Tell me the colors of the fruits you know."}]
# A long constrained answer of a known length: 40 digits in a JSON array (about 120 tokens).
DIGITS = {
    "type": "object",
    "properties": {
        "digits": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9},
            "minItems": 40,
            "maxItems": 40,
        }
    },
    "required": ["digits"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}
# The demo model's special tokens (ids 0-4: pad, begin/end of text, turn start/end). With
# `ignore_eos` alone the unconstrained side writes end-of-turn tokens that stream no text, so
# it would send a fifth of the chunks of the JSON side; barred, every token is streamed text.
NO_SPECIAL_TOKENS = {str(token_id): -100 for token_id in range(5)}
# Tokens of a forced weather call on the demo model (its length, measured).
CALL_TOKENS = 32
Body = Callable[[int], dict[str, Any]]
# Vocabulary sizes the mask kernel is timed at: the demo model's, Llama 2's, Llama 3's.
KERNEL_VOCABS = (910, 32_000, 128_256)


def plain(tokens: int) -> Body:
    """Unconstrained requests of `tokens` output tokens each, every one streamed as text."""
    return lambda i: {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": tokens,
        "ignore_eos": True,
        "logit_bias": NO_SPECIAL_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def with_schema(tokens: int) -> Body:
    """The same requests held to DIGITS."""
    fmt = {"type": "json_schema", "json_schema": {"name": "digits", "schema": DIGITS}}
    return lambda i: plain(tokens)(i) | {"response_format": fmt, "ignore_eos": False}


def with_tool(tokens: int) -> Body:
    """The same requests, answered by a forced call of a weather tool (CALL_TOKENS long).

    The end of the turn is allowed again: after the call it is the only way to stop.
    """
    return lambda i: (
        plain(tokens)(i)
        | {
            "tools": [WEATHER],
            "tool_choice": "required",
            "ignore_eos": False,
            "logit_bias": None,
        }
    )


def tool_offered(tokens: int) -> Body:
    """The same prompt, tools listed, `tool_choice: none`: plain text as long as a call."""
    return lambda i: plain(tokens)(i) | {"tools": [WEATHER], "tool_choice": "none"}


async def load(url: str, body: Body, requests: int, streams: int) -> dict[str, Any]:
    """`requests` streamed requests, at most `streams` at once; their summary."""
    gate = asyncio.Semaphore(streams)
    async with client_session(None) as session:

        async def one(i: int) -> Any:
            async with gate:
                return await stream_chat(session, url, body(i))

        started = time.perf_counter()
        records = await asyncio.gather(*(one(i) for i in range(requests)))
        return summarize(records, time.perf_counter() - started)


async def first_token_s(url: str, schema: dict[str, Any]) -> float:
    """Time to the first token of one request held to `schema`."""
    body = with_schema(16)(0) | {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "fresh", "schema": schema},
        }
    }
    async with client_session(None) as session:
        record = await stream_chat(session, url, body)
    if not record.ok or record.ttft is None:
        raise RuntimeError(f"the request failed: {record.error}")
    return record.ttft


def fresh_schema() -> dict[str, Any]:
    """A schema no request has used yet: its own property names."""
    names = [f"p{uuid.uuid4().hex[:8]}" for _ in range(6)]
    return {
        "type": "object",
        "properties": {name: {"type": "integer", "minimum": 0} for name in names},
        "required": names,
    }


def kernel_times(rows: int, repeats: int) -> dict[int, dict[str, float]]:
    """Median seconds per call of xgrammar's CPU mask kernel and ours, at each of KERNEL_VOCABS
    (the two in turn, `repeats` times)."""
    import torch
    from xgrammar.kernels.apply_token_bitmask_inplace_cpu import apply_token_bitmask_inplace_cpu

    from server.engine.cpu_bitmask import apply_token_bitmask

    kernels = {"xgrammar": apply_token_bitmask_inplace_cpu, "ours": apply_token_bitmask}
    times = {}
    for vocab in KERNEL_VOCABS:
        bitmask = torch.zeros(rows, (vocab + 31) // 32, dtype=torch.int32)
        bitmask[:, 1] = 0b1111  # four tokens allowed, as after a JSON value's first character
        logits = torch.randn(rows, vocab)
        calls = max(10, 2_000_000 // (rows * vocab))
        runs: dict[str, list[float]] = {name: [] for name in kernels}
        for _ in range(repeats):
            for name, kernel in kernels.items():
                runs[name].append(_seconds_per_call(kernel, logits, bitmask, calls))
        times[vocab] = {name: statistics.median(seconds) for name, seconds in runs.items()}
    return times


def _seconds_per_call(kernel: Callable[..., None], logits: Any, bitmask: Any, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        kernel(logits, bitmask)
    return (time.perf_counter() - started) / calls


def warm_up(url: str, kinds: tuple[Callable[[int], Body], ...], args: argparse.Namespace) -> None:
    """A run's worth of streams of each kind of request, untimed, at the measured load (the first
    timed pair still tends to be the low one; see the README)."""
    for kind in kinds:
        asyncio.run(load(url, kind(args.tokens), 2 * args.streams, args.streams))


def compare(url: str, a: Body, b: Body, args: argparse.Namespace) -> dict[str, Any]:
    """Both sides in turn, `args.repeats` times; every run's summary and the medians."""
    return alternate(
        {"a": a, "b": b},
        lambda body: asyncio.run(load(url, body, args.requests, args.streams)),
        args.repeats,
        ("output_tok_s", "ttft_ms_p50", "ttft_ms_p99"),
    )


def main() -> None:
    """Start the server, run the three comparisons, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--requests", type=int, default=256, help="requests per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--schemas", type=int, default=8, help="never-seen schemas to time")
    parser.add_argument("--vllm", action="store_true", help="also on vLLM's own server")
    parser.add_argument("--out", type=Path, help="folder for results.json")
    args = parser.parse_args()

    kernels = kernel_times(args.streams, args.repeats)
    engine, model_dir = EngineSettings(), prepare_model("demo", None)
    # vLLM's CPU backend takes its KV cache size from the environment, ours from a flag.
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "VLLM_CPU_KVCACHE_SPACE": str(engine.kv_cache_gib),
    }
    with tempfile.TemporaryDirectory(prefix="bench-structured-") as tmp:
        port = free_port()
        cmd = kangaroo_cmd(model_dir, port, engine)
        with running_server(cmd, port, Path(tmp) / "server.log", env) as url:
            warm_up(url, (with_schema, plain, with_tool), args)
            schema = compare(url, with_schema(args.tokens), plain(args.tokens), args)
            tools = compare(url, with_tool(args.tokens), tool_offered(CALL_TOKENS), args)
            cold, warm = [], []
            for _ in range(args.schemas):
                fresh = fresh_schema()
                cold.append(asyncio.run(first_token_s(url, fresh)))
                warm.append(asyncio.run(first_token_s(url, fresh)))
        vllm = None
        if args.vllm:
            port = free_port()
            cmd = vllm_server_cmd(model_dir, port, engine)
            # vLLM as its users run it: without the plugins this project installs into it.
            stock = env | {"VLLM_PLUGINS": ""}
            with running_server(cmd, port, Path(tmp) / "vllm.log", stock) as url:
                warm_up(url, (with_schema, plain), args)
                vllm = compare(url, with_schema(args.tokens), plain(args.tokens), args)
    report(args, schema, tools, cold, warm, vllm, kernels)


def report(
    args: argparse.Namespace,
    schema: dict[str, Any],
    tools: dict[str, Any],
    cold: list[float],
    warm: list[float],
    vllm: dict[str, Any] | None,
    kernels: dict[int, dict[str, float]],
) -> None:
    """Print the figures and ratios; write results.json when --out is given."""
    ratio_schema, ratio_tools = _tok_s_ratio(schema), _tok_s_ratio(tools)
    cold_ms, warm_ms = statistics.median(cold) * 1000, statistics.median(warm) * 1000
    lines = [
        f"{args.streams} streams, {args.requests} requests per run, medians of {args.repeats} runs",
        "| requests | output tok/s | TTFT p50 ms | TTFT p99 ms |",
        "| --- | --- | --- | --- |",
    ]
    for name, side in (
        ("json_schema", schema["median"]["a"]),
        ("unconstrained", schema["median"]["b"]),
        ("tool calls (required)", tools["median"]["a"]),
        ("plain, same prompt and length", tools["median"]["b"]),
    ):
        lines.append(
            f"| {name} | {side['output_tok_s']:,.0f} | {side['ttft_ms_p50']:.0f} | "
            f"{side['ttft_ms_p99']:.0f} |"
        )
    lines += [
        f"json_schema / unconstrained throughput: {ratio_schema:.2f}x (target >= 0.9x)",
        *_vllm_line(vllm),
        f"tool calls / plain throughput: {ratio_tools:.2f}x",
        f"first token of a never-seen schema: {cold_ms:.0f} ms median; the same schema again: "
        f"{warm_ms:.0f} ms ({cold_ms / warm_ms:.1f}x), over {len(cold)} schemas",
        f"failed requests: {schema['failed'] + tools['failed']}",
        f"token-mask kernel, {args.streams} rows, median of {args.repeats}:",
        *(
            f"  vocabulary {vocab:,}: xgrammar {t['xgrammar'] * 1e6:,.0f} us, ours "
            f"{t['ours'] * 1e6:,.0f} us ({t['xgrammar'] / t['ours']:.1f}x faster)"
            for vocab, t in kernels.items()
        ),
    ]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "settings": vars(args) | {"out": str(args.out)},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "json_schema_vs_unconstrained": schema,
            "tool_calls_vs_plain": tools,
            "vllm_json_schema_vs_unconstrained": vllm,
            "first_token_s": {"never_seen": cold, "cached": warm},
            "mask_kernel_s": kernels,
            "ratios": {
                "json_schema": ratio_schema,
                "vllm_json_schema": _tok_s_ratio(vllm) if vllm else None,
                "tool_calls": ratio_tools,
                "compile": cold_ms / warm_ms,
            },
        }
        (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "results.md").write_text("\n".join(lines) + "\n")


def _vllm_line(vllm: dict[str, Any] | None) -> list[str]:
    """The report's line on vLLM's own server, if it ran."""
    if vllm is None:
        return []
    a, b = vllm["median"]["a"]["output_tok_s"], vllm["median"]["b"]["output_tok_s"]
    return [f"the same on vLLM's own server: {a / b:.2f}x ({a:,.0f} / {b:,.0f} tok/s)"]


def _tok_s_ratio(comparison: dict[str, Any]) -> float:
    """Side a's median output tokens/s over side b's."""
    return comparison["median"]["a"]["output_tok_s"] / comparison["median"]["b"]["output_tok_s"]


if __name__ == "__main__":
    main()
