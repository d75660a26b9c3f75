"""What a request and a streamed token cost the API process, ours vs vLLM's server.

    python scripts/bench_requests.py --out scripts/results/requests

On a small machine the API process shares a core with the engine-core process: every
millisecond it spends is taken from the engine. Against each server in turn (same model and
engine settings as `bench.py compare`, never two at once) this measures:
- requests: `--rounds` bursts of `--burst` concurrent streamed chat requests for one token
  each. API process CPU per request (user + system CPU time of the server's own process, not
  the engine's, over all bursts, divided by the requests) and the burst time (from its start
  until its slowest request has its token; median);
- tokens: `--burst` concurrent streams of `--stream-tokens` tokens (`ignore_eos`). Output
  tokens/s, API process CPU per token, and SSE events per token (a server may send several
  tokens in one event when they are ready together).
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

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
from scripts.loadgen import client_session  # noqa: E402
from scripts.soak import listening_pid  # noqa: E402

WORDS = "the a kangaroo hops over field river stone tree sky sun moon star red green".split()


async def _one_token(session: aiohttp.ClientSession, url: str, prompt: str) -> None:
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 1,
        "stream": True,
        "temperature": 0,
    }
    async with session.post(f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for _ in response.content:  # read the whole stream, [DONE] included
            pass


async def _stream(session: aiohttp.ClientSession, url: str, tokens: int) -> int:
    """One long stream; how many content events it had."""
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
    }
    events = 0
    async with session.post(f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            events += line.startswith(b"data: {")
    return events


async def streams(url: str, count: int, tokens: int) -> tuple[float, int]:
    """Seconds for `count` concurrent streams of `tokens` tokens, and their events."""
    async with client_session(None) as session:
        started = time.perf_counter()
        events = await asyncio.gather(*(_stream(session, url, tokens) for _ in range(count)))
        return time.perf_counter() - started, sum(events)


async def bursts(url: str, burst: int, rounds: int, seed: int) -> list[float]:
    """Seconds each burst took, after one untimed burst."""
    rng = random.Random(seed)
    async with client_session(None) as session:
        took = []
        for _ in range(rounds + 1):
            prompts = [" ".join(rng.choice(WORDS) for _ in range(64)) for _ in range(burst)]
            started = time.perf_counter()
            await asyncio.gather(*(_one_token(session, url, p) for p in prompts))
            took.append(time.perf_counter() - started)
        return took[1:]


def measure(system: str, cmd: list[str], port: int, args: argparse.Namespace) -> dict[str, Any]:
    """One server: start it, time its bursts and its process's CPU, stop it."""
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(EngineSettings().kv_cache_gib)}
    with running_server(cmd, port, args.out / f"{system}.log", env) as url:
        server = psutil.Process(listening_pid(url))
        asyncio.run(bursts(url, args.burst, 1, args.seed))  # warm-up
        before = server.cpu_times()
        took = asyncio.run(bursts(url, args.burst, args.rounds, args.seed))
        middle = server.cpu_times()
        seconds, events = asyncio.run(streams(url, args.burst, args.stream_tokens))
        after = server.cpu_times()
    requests = args.burst * (args.rounds + 1)
    tokens = args.burst * args.stream_tokens
    return {
        "system": system,
        "api_cpu_ms_per_request": round(1000 * _cpu_s(before, middle) / requests, 3),
        "burst_ms_median": round(1000 * statistics.median(took), 1),
        "stream_tok_s": round(tokens / seconds),
        "api_cpu_us_per_token": round(1e6 * _cpu_s(middle, after) / tokens, 1),
        "events_per_token": round(events / tokens, 3),
        "burst_ms": [round(1000 * t, 1) for t in took],
    }


def _cpu_s(before: Any, after: Any) -> float:
    return float((after.user - before.user) + (after.system - before.system))


def main(argv: list[str] | None = None) -> None:
    """Measure both servers (in turn, never together) `--repeats` times; print and save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--stream-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("scripts/results/requests"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model("demo", None)
    engine = EngineSettings()
    rows = []
    for _ in range(args.repeats):
        for system, cmd_for in (("kangaroo", kangaroo_cmd), ("vLLM api_server", vllm_server_cmd)):
            port = free_port()
            rows.append(measure(system, cmd_for(model_dir, port, engine), port, args))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "burst_ms"}))
    summary = {}
    for system in ("kangaroo", "vLLM api_server"):
        mine = [r for r in rows if r["system"] == system]
        summary[system] = {
            name: statistics.median(r[name] for r in mine)
            for name in (
                "api_cpu_ms_per_request",
                "burst_ms_median",
                "stream_tok_s",
                "api_cpu_us_per_token",
                "events_per_token",
            )
        }
    ours, theirs = summary["kangaroo"], summary["vLLM api_server"]
    print(f"medians: {json.dumps(summary)}")
    for name in (
        "api_cpu_ms_per_request",
        "burst_ms_median",
        "stream_tok_s",
        "api_cpu_us_per_token",
    ):
        print(f"{name:24} kangaroo / vLLM's server: {ours[name] / theirs[name]:.2f}x")
    result = {"command": sys.argv, "burst": args.burst, "rounds": args.rounds, "runs": rows}
    (args.out / "results.json").write_text(json.dumps(result | {"medians": summary}, indent=1))


if __name__ == "__main__":
    main()
