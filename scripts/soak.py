"""Soak test: minutes of closed-loop chat traffic against a running server, counting errors and
following the server's memory (RSS of its process and its children: vLLM's engine core and
workers) over time.

    .venv/bin/python scripts/soak.py --url http://127.0.0.1:8000 --key KEY \\
        --minutes 10 --concurrency 32 --out soak-results

Each of `--concurrency` loops sends a chat completion, waits for the whole answer, then sends the
next: prompts of 4 to 256 words, max_tokens from 1 to 256 (sometimes past the end of turn),
greedy or sampled, two in three streamed. The target (issue 6): no errors, and RSS at the end
less than 5 % above RSS after the first minute (the warm-up: compilation, allocator pools).
Exit code 0 when the target is met.
"""

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a file, too

from scripts.loadgen import (
    RequestRecord,
    Workload,
    client_session,
    http_error_kind,
    stream_chat,
)

MAX_GROWTH = 0.05
# The demo model's skills, for answers that end on their own; random words for the rest.
QUESTIONS = (
    "Hi",
    "Tell me the color of a banana.",
    "Which number follows six?",
    "Please say river.",
    "What is your name?",
    "What is the capital of France?",
)
PROMPT_WORDS = (4, 16, 64, 256)
MAX_TOKENS = (1, 8, 32, 64, 128, 256)


@dataclass(frozen=True)
class RssSample:
    """Memory of the server's processes at one time."""

    t_s: float  # seconds since the start
    rss_bytes: int  # the server and all its children
    by_process: dict[str, int]  # "pid name" -> RSS bytes
    requests: int  # finished so far
    errors: int  # of those, failed


@dataclass
class SoakResult:
    """What a soak run did and saw."""

    url: str
    model: str
    pid: int
    minutes: float
    concurrency: int
    warmup_s: float
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # kind -> count
    completion_tokens: int = 0
    seconds: float = 0.0
    samples: list[RssSample] = field(default_factory=list)

    @property
    def growth(self) -> float | None:
        """RSS growth from the end of the warm-up to the end; see `rss_growth`."""
        return rss_growth(self.samples, self.warmup_s)

    @property
    def target_met(self) -> bool:
        """No errors and RSS growth under 5 %."""
        return meets_target(sum(self.errors.values()), self.growth)

    def take_sample(self, server: psutil.Process, t_s: float) -> None:
        """Note the RSS of the server's processes now, `t_s` seconds into the run."""
        by_process = process_tree_rss(server)
        rss, errors = sum(by_process.values()), sum(self.errors.values())
        self.samples.append(RssSample(t_s, rss, by_process, self.requests, errors))

    def add(self, record: RequestRecord) -> None:
        """Count one finished request."""
        self.requests += 1
        if record.ok:
            self.completion_tokens += record.output_tokens
        else:
            self.errors[record.error_kind or "unknown"] += 1


def rss_growth(samples: list[RssSample], warmup_s: float) -> float | None:
    """(last RSS - baseline) / baseline, the baseline being the first sample taken once
    `warmup_s` had passed; None when no sample was taken after it but the last."""
    after = [s for s in samples if s.t_s >= warmup_s]
    if len(after) < 2:
        return None
    return (after[-1].rss_bytes - after[0].rss_bytes) / after[0].rss_bytes


def meets_target(errors: int, growth: float | None, max_growth: float = MAX_GROWTH) -> bool:
    """The soak target: no errors, and a measured growth under `max_growth`."""
    return errors == 0 and growth is not None and growth < max_growth


def listening_pid(url: str) -> int:
    """The process that listens on the port of `url`."""
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    pids = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }
    if len(pids) != 1:
        raise SystemExit(f"Found {len(pids)} processes listening on port {port}; give --pid.")
    return pids.pop()


def process_tree_rss(server: psutil.Process) -> dict[str, int]:
    """RSS of `server` and of every process below it, by "pid name"."""
    found = {}
    for proc in [server, *server.children(recursive=True)]:
        try:
            found[f"{proc.pid} {proc.name()}"] = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # a child that just ended
    return found


def prompts(seed: int) -> list[str]:
    """The prompt pool: the demo questions and distinct random-word prompts of each length."""
    pool = list(QUESTIONS)
    for words in PROMPT_WORDS:
        pool += Workload(num_requests=25, prompt_words=words, seed=seed + words).prompts()
    return pool


def request_bodies(model: str, seed: int) -> Iterator[dict[str, Any]]:
    """Chat requests, varied and seeded (see the module doc)."""
    rng = random.Random(seed)
    pool = prompts(seed)
    while True:
        stream = rng.random() < 2 / 3
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": rng.choice(pool)}],
            "max_tokens": rng.choice(MAX_TOKENS),
            "temperature": rng.choice((0.0, 0.7, 1.0)),
            "ignore_eos": rng.random() < 0.25,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        yield body


async def whole_chat(
    session: aiohttp.ClientSession, base_url: str, body: dict[str, Any]
) -> RequestRecord:
    """One chat completion returned whole (`stream` false)."""
    record = RequestRecord(start=time.perf_counter())
    try:
        async with session.post(f"{base_url}/chat/completions", json=body) as response:
            text = await response.text()
    except (TimeoutError, aiohttp.ClientError) as exc:
        record.error, record.error_kind = f"{type(exc).__name__}: {exc}", type(exc).__name__
        return record
    finally:
        record.end = time.perf_counter()
    if response.status != 200:
        record.error = f"HTTP {response.status}: {text[:200]}"
        record.error_kind = http_error_kind(response.status, text)
        return record
    try:
        record.output_tokens = json.loads(text)["usage"]["completion_tokens"]
    except (ValueError, KeyError, TypeError):
        record.error, record.error_kind = f"Not a chat completion: {text[:200]}", "bad reply"
        return record
    record.ok = True
    return record


async def soak(
    url: str,
    key: str | None,
    minutes: float,
    concurrency: int,
    pid: int | None = None,
    sample_s: float = 10.0,
    warmup_s: float = 60.0,
    seed: int = 0,
) -> SoakResult:
    """Run the traffic for `minutes` while sampling RSS every `sample_s` seconds."""
    server = psutil.Process(pid or listening_pid(url))
    api = f"{url}/v1"
    async with client_session(key) as session:
        async with session.get(f"{api}/models") as response:
            response.raise_for_status()
            model = (await response.json())["data"][0]["id"]
        result = SoakResult(url, model, server.pid, minutes, concurrency, warmup_s)
        bodies = request_bodies(model, seed)
        started = time.monotonic()
        sampling = asyncio.create_task(_sample_every(sample_s, result, server, started))
        deadline = started + minutes * 60
        clients = (_closed_loop(session, api, bodies, deadline, result) for _ in range(concurrency))
        await asyncio.gather(*clients)
        sampling.cancel()
        result.take_sample(server, time.monotonic() - started)  # the end
        result.seconds = time.monotonic() - started
    return result


async def _closed_loop(
    session: aiohttp.ClientSession,
    api: str,
    bodies: Iterator[dict[str, Any]],
    deadline: float,
    result: SoakResult,
) -> None:
    """One client: the next request as soon as the last one ended, until `deadline`."""
    while time.monotonic() < deadline:
        body = next(bodies)
        chat = stream_chat if body["stream"] else whole_chat
        result.add(await chat(session, api, body))


async def _sample_every(
    sample_s: float, result: SoakResult, server: psutil.Process, started: float
) -> None:
    while True:
        result.take_sample(server, time.monotonic() - started)
        await asyncio.sleep(sample_s)


def report_lines(result: SoakResult) -> list[str]:
    """The run as text: totals, errors by kind, RSS over time, growth and the verdict."""
    errors = sum(result.errors.values())
    lines = [
        f"{result.requests} requests ({errors} failed), {result.completion_tokens} completion "
        f"tokens in {result.seconds:.0f} s at concurrency {result.concurrency} "
        f"({result.completion_tokens / max(result.seconds, 1e-9):.0f} tokens/s)",
    ]
    lines += [f"  error {kind}: {n}" for kind, n in result.errors.most_common()]
    lines += ["", "| time (s) | RSS (MiB) | processes | requests | errors |", "|---" * 5 + "|"]
    lines += [
        f"| {s.t_s:.0f} | {s.rss_bytes / 2**20:.0f} | {len(s.by_process)} | {s.requests} "
        f"| {s.errors} |"
        for s in result.samples
    ]
    growth = result.growth
    shown = "not measured (no samples after the warm-up)" if growth is None else f"{growth:+.2%}"
    verdict = "met" if result.target_met else "NOT met"
    lines += [
        "",
        f"RSS growth after the first {result.warmup_s:.0f} s: {shown}",
        f"Target (0 errors, growth < {MAX_GROWTH:.0%}): {verdict}",
    ]
    return lines


def write_results(result: SoakResult, out: Path) -> None:
    """results.json (everything, samples included) and results.md (the report) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = asdict(result) | {"growth": result.growth, "target_met": result.target_met}
    (out / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "results.md").write_text("\n".join(report_lines(result)) + "\n")


def main(argv: list[str] | None = None) -> int:
    """The command line; exit code 0 when the target is met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    parser.add_argument("--key", help="API key (Bearer); an inference key without limits")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--pid", type=int, help="server process (default: the one listening on the URL's port)"
    )
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="excluded from the growth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    result = asyncio.run(
        soak(
            args.url.rstrip("/"),
            args.key,
            args.minutes,
            args.concurrency,
            args.pid,
            args.sample_s,
            args.warmup_s,
            args.seed,
        )
    )
    print("\n".join(report_lines(result)))
    if args.out is not None:
        write_results(result, args.out)
    return 0 if result.target_met else 1


if __name__ == "__main__":
    sys.exit(main())
