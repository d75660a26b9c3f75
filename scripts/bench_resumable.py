"""What resumable streams and stored responses cost, against the plain paths, on one server.

    python scripts/bench_resumable.py --out scripts/results/resumable

Starts our server on the demo model and compares, each pair run in turn (ABAB, `--repeats`
times, medians):

1. chat streams with `X-Resumable: true` (generated apart from the exchange, events kept for
   resumes) against plain chat streams: `--streams` concurrent streams of `--tokens` tokens;
   output tokens/s and time to first token (target: >= 0.95x tokens/s, TTFT p50 within 1.1x);
2. streamed Responses API requests, stored (`store: true`: every event written to SQLite)
   against `store: false`, and against chat completions of the same conversation: short greedy
   answers ("Hi"), `--streams` at once; requests/s and TTFT (target: stored >= 0.9x of chat).
"""

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench import free_port, running_server  # noqa: E402
from scripts.bench_report import alternate, summarize  # noqa: E402
from scripts.bench_structured import plain  # noqa: E402
from scripts.loadgen import RequestRecord, client_session, stream_chat  # noqa: E402

MODEL = "kangaroo-demo"
Send = Callable[[aiohttp.ClientSession, str, int], Awaitable[RequestRecord]]


def chat_stream(tokens: int, resumable: bool) -> Send:
    """Streamed chat requests of `tokens` text tokens each, plain or resumable."""
    headers = {"X-Resumable": "true"} if resumable else {}

    async def send(session: aiohttp.ClientSession, url: str, i: int) -> RequestRecord:
        return await stream_chat(session, url, plain(tokens)(i), headers=headers)

    return send


def chat_hi() -> Send:
    """ "Hi" as a streamed chat completion (greedy): the demo model's short greeting."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    return lambda session, url, i: stream_chat(session, url, body)


def response_hi(store: bool) -> Send:
    """ "Hi" as a streamed Responses API request (greedy), stored or not."""
    body = {"model": MODEL, "input": "Hi", "temperature": 0, "stream": True, "store": store}
    return lambda session, url, i: stream_response(session, url, body)


async def stream_response(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> RequestRecord:
    """One streamed Responses API request, timed like a chat stream (text deltas)."""
    record = RequestRecord(start=time.perf_counter())
    try:
        async with session.post(f"{url}/responses", json=body) as response:
            if response.status != 200:
                record.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return record
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[len("data: ") :])
                if event["type"] == "response.output_text.delta":
                    record.mark_content()
                elif event["type"] == "response.completed":
                    record.output_tokens = event["response"]["usage"]["output_tokens"]
                    record.token_source = "usage"
                    record.ok = True
    except (TimeoutError, aiohttp.ClientError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    finally:
        record.end = time.perf_counter()
    if not record.ok and record.error is None:
        record.error = "stream ended without response.completed"
    return record


async def load(url: str, send: Send, requests: int, streams: int) -> dict[str, Any]:
    """`requests` requests, at most `streams` at once; their summary."""
    gate = asyncio.Semaphore(streams)
    async with client_session(None) as session:

        async def one(i: int) -> RequestRecord:
            async with gate:
                return await send(session, url, i)

        started = time.perf_counter()
        records = await asyncio.gather(*(one(i) for i in range(requests)))
        return summarize(records, time.perf_counter() - started)


def compare(url: str, sides: dict[str, Send], args: argparse.Namespace) -> dict[str, Any]:
    """Every side in turn, `args.repeats` times; each run's summary and the medians."""
    return alternate(
        sides,
        lambda send: asyncio.run(load(url, send, args.requests, args.streams)),
        args.repeats,
        ("output_tok_s", "requests_s", "ttft_ms_p50", "ttft_ms_p99"),
    )


def main() -> None:
    """Start the server, run both comparisons, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128, help="output tokens per chat stream")
    parser.add_argument("--requests", type=int, default=256, help="requests per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="folder for results.json")
    args = parser.parse_args()

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-resumable-") as tmp:
        cmd = [sys.executable, "-m", "server", "--port", str(port), "--log-level", "warning"]
        cmd += ["--data-dir", str(Path(tmp) / "data")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with running_server(cmd, port, Path(tmp) / "server.log", env) as url:
            for warm in (chat_stream(args.tokens, True), response_hi(True)):
                asyncio.run(load(url, warm, 8, 8))
            streams = compare(
                url,
                {
                    "resumable": chat_stream(args.tokens, True),
                    "plain": chat_stream(args.tokens, False),
                },
                args,
            )
            short = compare(
                url,
                {"stored": response_hi(True), "not_stored": response_hi(False), "chat": chat_hi()},
                args,
            )
    report(args, streams, short)


def report(args: argparse.Namespace, streams: dict[str, Any], short: dict[str, Any]) -> None:
    """Print the ratios and save everything."""
    s, r = streams["median"], short["median"]
    ratios = {
        "resumable_vs_plain_tok_s": s["resumable"]["output_tok_s"] / s["plain"]["output_tok_s"],
        "resumable_vs_plain_ttft_p50": s["resumable"]["ttft_ms_p50"] / s["plain"]["ttft_ms_p50"],
        "stored_vs_not_stored_req_s": r["stored"]["requests_s"] / r["not_stored"]["requests_s"],
        "stored_vs_chat_req_s": r["stored"]["requests_s"] / r["chat"]["requests_s"],
        "stored_vs_chat_ttft_p50": r["stored"]["ttft_ms_p50"] / r["chat"]["ttft_ms_p50"],
    }
    print(f"{args.streams} streams, medians of {args.repeats} interleaved runs")
    for side, figures in {**s, **r}.items():
        print(f"  {side:11} " + "  ".join(f"{k} {v:,.1f}" for k, v in figures.items()))
    for name, value in ratios.items():
        print(f"  {name}: {value:.3f}x")
    print(f"  failed requests: {streams['failed'] + short['failed']}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "machine": {"cpu": platform.processor(), "cores": os.cpu_count()},
            "streams": streams,
            "short": short,
            "ratios": ratios,
        }
        (args.out / "results.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
