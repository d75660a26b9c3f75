"""Batch and live traffic on one server: does a running batch hurt live requests, and how fast
does a batch run on the server compared with the offline runner?

    python scripts/bench_batch_live.py --repeats 2 --out scripts/results/batch-live

One server (the demo model), phases in turn, each `--repeats` times (ABCABC...):

- live:        live traffic alone: `--streams` streams at most, Poisson arrivals at `--rate`;
- live+batch:  the same live traffic while a large batch runs on the same server;
- batch:       a batch of `--lines` lines alone (server batch throughput);
- offline:     the same file through `python -m server.batch run` (the offline runner).

It prints TTFT p50/p99 of the live requests in both live phases (target: p99 with the batch
<= 1.25x without), the batch's output tokens/s in each phase (the capacity it used), and
server batch / offline throughput (target >= 0.9x); results.json goes to `--out`.
Throughput of a batch is counted from its first finished line to its last, so neither the
offline runner's engine start-up nor the server's polling is in it.
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench import free_port, prepare_model, running_server  # noqa: E402
from scripts.loadgen import (  # noqa: E402
    RequestRecord,
    Workload,
    client_session,
    run_workload,
    stream_chat,
)

SERVED_NAME = "bench-model"
# The demo model ends turns with special tokens the detokenizer hides: with ignore_eos they
# would be generated and counted but never shown, so every request bars them.
NO_SPECIAL_TOKENS = {str(token_id): -100 for token_id in range(5)}
BATCH_TOKENS = re.compile(
    r'^kangaroo_completion_tokens_total\{[^}]*mode="batch"[^}]*\} (\S+)$', re.M
)


def request_body(prompt: str, max_tokens: int) -> dict[str, Any]:
    """A greedy chat request of exactly `max_tokens` output tokens."""
    return {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "logit_bias": NO_SPECIAL_TOKENS,
    }


def batch_file(lines: int, max_tokens: int, seed: int) -> bytes:
    """A batch input file of distinct chat requests."""
    prompts = Workload(lines, prompt_words=64, seed=seed).prompts()
    return b"".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": request_body(p, max_tokens)}).encode() + b"\n"
        for i, p in enumerate(prompts)
    )  # fmt: skip


async def live_phase(url: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Live traffic for about `--live-seconds`: TTFT percentiles and output tokens/s."""
    workload = Workload(
        int(args.rate * args.live_seconds), prompt_words=64, output_tokens=args.max_tokens,
        concurrency=args.streams, request_rate=args.rate, seed=seed,
    )  # fmt: skip
    async with client_session(None) as session:

        async def send(prompt: str) -> RequestRecord:
            body = request_body(prompt, args.max_tokens) | {
                "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
            return await stream_chat(session, url, body)

        records, wall_s = await run_workload(send, workload)
    ok = [r for r in records if r.ok and r.ttft is not None]
    ttfts = sorted(r.ttft * 1000 for r in ok if r.ttft is not None)
    return {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "ttft_ms_p50": statistics.median(ttfts),
        "ttft_ms_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "live_tok_s": sum(r.output_tokens for r in ok) / wall_s,
        "seconds": wall_s,
    }


@contextlib.contextmanager
def client_first() -> Iterator[None]:
    """This process (the live clients) ahead of the server's in the CPU queue, where allowed.

    Live clients run on other machines; here they share two cores with the server, and a
    client starved of CPU would count its own wait as the server's time to first token.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except PermissionError:
        print("(not allowed to raise the clients' CPU priority: TTFT includes their waits)")
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, 0)


def batch_tokens(url: str) -> float:
    """Output tokens of batch lines so far, from /metrics."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).text
    return sum(float(value) for value in BATCH_TOKENS.findall(text))


def submit(client: openai.OpenAI, data: bytes) -> str:
    """Upload `data` and start a batch on it; the batch id."""
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


def completed(client: openai.OpenAI, batch_id: str) -> int:
    """Lines of the batch completed so far."""
    counts = client.batches.retrieve(batch_id).request_counts
    return counts.completed if counts else 0


def live_with_batch(url: str, client: openai.OpenAI, args: argparse.Namespace, seed: int) -> dict:
    """The live phase while a batch larger than the phase runs; the batch's tokens/s in it."""
    batch_id = submit(client, batch_file(args.lines * 4, args.max_tokens, seed + 1000))
    while completed(client, batch_id) < 1:
        time.sleep(0.1)
    before, started = batch_tokens(url), time.perf_counter()
    row = asyncio.run(live_phase(url, args, seed))
    row["batch_tok_s"] = (batch_tokens(url) - before) / (time.perf_counter() - started)
    still_running = client.batches.retrieve(batch_id).status == "in_progress"
    client.batches.cancel(batch_id)
    while client.batches.retrieve(batch_id).status not in ("cancelled", "completed"):
        time.sleep(0.2)
    row["batch_outlasted_phase"] = still_running
    return row


def batch_alone(client: openai.OpenAI, data: bytes) -> dict[str, Any]:
    """A batch with nothing else on the server: output tokens/s from first line to last."""
    batch_id = submit(client, data)
    first: float | None = None
    first_tokens = 0
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed"):
        if first is None and batch.request_counts and batch.request_counts.completed:
            first = time.perf_counter()
            first_tokens = batch.usage.output_tokens if batch.usage else 0
        time.sleep(0.05)
    if batch.status != "completed" or first is None:
        raise RuntimeError(f"the batch did not complete: {batch}")
    tokens = (batch.usage.output_tokens if batch.usage else 0) - first_tokens
    return {"batch_tok_s": tokens / (time.perf_counter() - first)}


def offline(model_dir: str, data: bytes, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The same file through the offline runner: output tokens/s from first line to last."""
    source, output = work / "offline-in.jsonl", work / "offline-out.jsonl"
    source.write_bytes(data)
    output.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "server.batch", "run", str(source), "--output", str(output),
           *engine_flags(model_dir, args)]  # fmt: skip
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first: float | None = None
    first_rows = 0
    while process.poll() is None:
        if first is None and output.is_file() and output.stat().st_size:
            first = time.perf_counter()
            first_rows = output.read_text().count("\n")
        time.sleep(0.05)
    ended = time.perf_counter()
    if process.returncode != 0 or first is None:
        raise RuntimeError(f"offline runner failed: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    per_line = rows[0]["response"]["body"]["usage"]["completion_tokens"]
    return {
        "batch_tok_s": per_line * (len(rows) - first_rows) / (ended - first),
        "lines": len(rows),
    }


def engine_flags(model_dir: str, args: argparse.Namespace) -> list[str]:
    """Engine settings both the server and the offline runner get."""
    return [
        "--model", model_dir, "--served-model-name", SERVED_NAME,
        "--max-num-seqs", str(args.max_num_seqs), "--max-model-len", "2048",
        "--kv-cache-gib", "2", "--log-level", "warning",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Run the phases and print the ratios."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--streams", type=int, default=16, help="most live requests at once")
    parser.add_argument("--rate", type=float, default=4.0, help="live Poisson arrivals/s")
    parser.add_argument("--live-seconds", type=float, default=60)
    parser.add_argument("--lines", type=int, default=2000, help="lines of the batch-alone file")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench-results/batch-live"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model("demo", None)
    data = batch_file(args.lines, args.max_tokens, seed=7)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for repeat in range(args.repeats):
            port = free_port()
            data_dir = str(work / f"data-{repeat}")
            cmd = [sys.executable, "-m", "server", "--port", str(port), "--data-dir", data_dir]
            cmd += engine_flags(model_dir, args)
            log = args.out / f"server-{repeat}.log"
            with running_server(cmd, port, log, dict(os.environ)) as url:
                client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
                runs.append({"phase": "live", "repeat": repeat}
                            | asyncio.run(live_phase(url, args, seed=repeat)))  # fmt: skip
                runs.append({"phase": "live+batch", "repeat": repeat}
                            | live_with_batch(url, client, args, seed=repeat))  # fmt: skip
                runs.append({"phase": "batch", "repeat": repeat} | batch_alone(client, data))
            runs.append(
                {"phase": "offline", "repeat": repeat} | offline(model_dir, data, args, work)
            )
            print(json.dumps(runs[-4:], indent=1), flush=True)
    report(runs, args)


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Medians per phase, the two ratios, and results.json."""

    def median(phase: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["phase"] == phase)

    def ratio(phase: str, baseline: str, key: str) -> float:
        return median(phase, key) / median(baseline, key)

    verdict = {
        "ttft_p99_with_batch_x": ratio("live+batch", "live", "ttft_ms_p99"),
        "ttft_p50_with_batch_x": ratio("live+batch", "live", "ttft_ms_p50"),
        "server_batch_vs_offline_x": ratio("batch", "offline", "batch_tok_s"),
    }
    lines = [
        f"live alone:      TTFT p50 {median('live', 'ttft_ms_p50'):.0f} ms, p99 "
        f"{median('live', 'ttft_ms_p99'):.0f} ms, live {median('live', 'live_tok_s'):.0f} tok/s",
        f"live + batch:    TTFT p50 {median('live+batch', 'ttft_ms_p50'):.0f} ms, p99 "
        f"{median('live+batch', 'ttft_ms_p99'):.0f} ms, live "
        f"{median('live+batch', 'live_tok_s'):.0f} tok/s, batch "
        f"{median('live+batch', 'batch_tok_s'):.0f} tok/s",
        f"batch alone:     {median('batch', 'batch_tok_s'):.0f} tok/s on the server, "
        f"{median('offline', 'batch_tok_s'):.0f} tok/s offline",
        f"TTFT p99 with a batch: {verdict['ttft_p99_with_batch_x']:.2f}x without (target <= 1.25)",
        f"server batch / offline runner: {verdict['server_batch_vs_offline_x']:.2f}x "
        "(target >= 0.9)",
    ]
    print("\n".join(lines))
    machine = {"platform": platform.platform(), "python": platform.python_version()}
    meta = {"command": sys.argv, "args": {k: str(v) for k, v in vars(args).items()}}
    meta["machine"] = machine
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "ratios": verdict, "summary": lines}, indent=2)
    )


if __name__ == "__main__":
    main()
