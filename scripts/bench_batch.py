"""Batch benchmarks: the offline runner against vLLM's own `run_batch`, and batch lines on a
serving server beside live traffic.

    python scripts/bench_batch.py offline --lines 2000 --repeats 3 --out scripts/results/batch
    python scripts/bench_batch.py live --repeats 2 --out scripts/results/batch-live

`offline` writes a chat batch file (`--lines` greedy requests for the demo model, varied: the
demo's own questions and random-word prompts of 8 to 128 words, a third of them behind one of
three shared system prompts, 32 to 64 output tokens each with `ignore_eos`), then runs on it, in
turn and `--repeats` times (ABAB...), with the same engine settings:

- ours:  `python -m server.batch run IN --output OUT ...`
- vLLM:  `python -m vllm.entrypoints.openai.run_batch -i IN -o OUT ...`

For each run it measures the wall time of the process, output tokens per second (tokens in the
output file over the time from the engine being ready, as its log says, to the last result on
disk; and over the wall time), peak memory (RSS summed over the process and all its children,
sampled every 0.1 s) and the time to the first output line (vLLM writes every line at the end).
It prints the medians and the ratios ours / vLLM's (target: throughput >= 1.0) and writes
results.json under `--out`.

`live` starts our server (the demo model) and runs, `--repeats` times, four phases:

- live:        live traffic alone: at most `--streams` streams, Poisson arrivals at `--rate`;
- live+batch:  the same live traffic while a batch larger than the phase runs on the server;
               these two alternate `--rounds` times (`--live-seconds` each), and each one's
               requests are pooled over its rounds: the machine's drift over minutes falls on
               both, and the p99 is taken over more requests (the 5th slowest of 480 with the
               defaults, not the 3rd of 240 as with one minute each);
- batch:       the `--lines` batch file alone on the server (server batch throughput);
- offline:     the same file through the offline runner (as `offline` measures ours).

It prints the live requests' TTFT p50/p99 in both live phases (target: p99 with the batch
<= 1.25x without), the batch's output tokens/s in each phase (the capacity it used), and server
batch / offline throughput (target >= 0.9x). The live clients run on the same machine as the
server (their CPU waits count in their TTFT, as they would on a loaded client).
"""

import argparse
import asyncio
import io
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench import EngineSettings, free_port, prepare_model, running_server  # noqa: E402
from scripts.bench_report import ratio  # noqa: E402
from scripts.loadgen import (  # noqa: E402
    RequestRecord,
    Workload,
    client_session,
    run_workload,
    stream_chat,
)
from scripts.soak import QUESTIONS  # noqa: E402
from server.batch.pacing import CALM_TICKS, TICK_S  # noqa: E402

SERVED_NAME = "bench-model"
# The demo model ends turns with special tokens (ids 0-4) that the detokenizer hides: under
# ignore_eos they would be generated, counted and never shown, so every request bars them.
NO_SPECIAL_TOKENS = {str(token_id): -100 for token_id in range(5)}
SYSTEM_PROMPTS = (
    "You are a helpful assistant. Answer in one short sentence.",
    "Summarise the user's text for a busy reader. Keep names and numbers exactly as given.",
    "You label support tickets. Reply with the product area, then a one-line reason.",
)
# What each system logs once its engine is ready to take requests.
READY_MARKS = {"kangaroo": "Engine ready", "vllm": "Reading batch from"}
SAMPLE_S = 0.1


# --- the batch file -----------------------------------------------------------------------


def request_body(rng: random.Random, prompt: str) -> dict[str, Any]:
    """A greedy chat request of 32 to 64 output tokens, maybe behind a shared system prompt."""
    messages = [{"role": "user", "content": prompt}]
    if rng.random() < 1 / 3:
        messages.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    return {
        "model": SERVED_NAME,
        "messages": messages,
        "max_tokens": rng.randint(32, 64),
        "temperature": 0,
        "ignore_eos": True,  # the same token count in both systems, whatever the model says
        "logit_bias": NO_SPECIAL_TOKENS,
    }


def prompts(lines: int, seed: int) -> list[str]:
    """`lines` prompts: the demo's questions and random-word texts of 8 to 128 words."""
    rng = random.Random(seed)
    words = [
        Workload(1, prompt_words=rng.choice((8, 16, 32, 64, 128)), seed=seed + i).prompts()[0]
        for i in range(lines)
    ]
    return [rng.choice(QUESTIONS) if rng.random() < 0.25 else text for text in words]


def write_batch_file(path: Path, lines: int, seed: int) -> Path:
    """The input file: one Batch API chat line per prompt."""
    rng = random.Random(seed + 1)
    with path.open("w") as out:
        for i, prompt in enumerate(prompts(lines, seed)):
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": request_body(rng, prompt)}  # fmt: skip
            out.write(json.dumps(line) + "\n")
    return path


# --- the two systems ----------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What both systems run: the model, the engine settings, eager or compiled."""

    model_dir: str
    engine: EngineSettings
    enforce_eager: bool

    def engine_flags(self) -> list[str]:
        """Flags both command lines spell the same way."""
        engine = self.engine
        return [
            "--model", self.model_dir, "--served-model-name", SERVED_NAME,
            "--dtype", engine.dtype, "--max-model-len", str(engine.max_model_len),
            "--max-num-seqs", str(engine.max_num_seqs),
            *(["--enforce-eager"] if self.enforce_eager else []),
        ]  # fmt: skip


def kangaroo_cmd(setup: Setup, source: Path, output: Path) -> list[str]:
    """Our offline runner."""
    return [
        sys.executable, "-m", "server.batch", "run", str(source), "--output", str(output),
        *setup.engine_flags(), "--kv-cache-gib", str(setup.engine.kv_cache_gib),
        "--log-format", "text",
    ]  # fmt: skip


def vllm_cmd(setup: Setup, source: Path, output: Path) -> list[str]:
    """vLLM's run_batch; its KV cache size comes from VLLM_CPU_KVCACHE_SPACE (see `measure`)."""
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.run_batch",
        "-i", str(source), "-o", str(output), *setup.engine_flags(),
    ]  # fmt: skip


COMMANDS = {"kangaroo": kangaroo_cmd, "vllm": vllm_cmd}


# --- one run --------------------------------------------------------------------------------


@dataclass
class Watch:
    """What the sampler saw of one run (seconds since the process started)."""

    peak_rss_bytes: int = 0
    ready_s: float | None = None
    first_line_s: float | None = None
    last_growth_s: float | None = None  # when the output file last grew
    output_size: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def sample(process: psutil.Process, log: Path, output: Path, mark: str, watch: Watch) -> None:
    """Until `watch.stop`: the tree's RSS, the log's ready mark, the output file's growth."""
    started = time.monotonic()
    while not watch.stop.is_set():
        now = time.monotonic() - started
        watch.peak_rss_bytes = max(watch.peak_rss_bytes, tree_rss(process))
        if watch.ready_s is None and mark in log.read_text(errors="replace"):
            watch.ready_s = now
        size = output.stat().st_size if output.is_file() else 0
        if size > watch.output_size:
            watch.output_size = size
            watch.last_growth_s = now
            if watch.first_line_s is None and b"\n" in output.read_bytes()[:size]:
                watch.first_line_s = now
        watch.stop.wait(SAMPLE_S)


def tree_rss(process: psutil.Process) -> int:
    """RSS of `process` and everything below it (a child that just ended counts nothing)."""
    total = 0
    try:
        children = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for proc in [process, *children]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def measure(system: str, setup: Setup, source: Path, output: Path, log: Path) -> dict[str, Any]:
    """Run one system to its end; its figures."""
    for stale in (output, output.with_name(output.stem + ".errors.jsonl")):
        stale.unlink(missing_ok=True)
    cmd = COMMANDS[system](setup, source, output)
    kv_cache = str(setup.engine.kv_cache_gib)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": kv_cache, "PYTHONUNBUFFERED": "1"}
    watch = Watch()
    started = time.monotonic()
    with log.open("wb") as sink:
        popen = subprocess.Popen(cmd, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, env=env)
    args = (psutil.Process(popen.pid), log, output, READY_MARKS[system], watch)
    sampler = threading.Thread(target=sample, args=args, daemon=True)
    sampler.start()
    code = popen.wait()
    wall_s = time.monotonic() - started
    watch.stop.set()
    sampler.join()
    errors = output.with_name(output.stem + ".errors.jsonl")  # ours; vLLM keeps all in one
    rows = [json.loads(row) for path in (output, errors) if path.is_file()
            for row in path.read_text().splitlines()]  # fmt: skip
    ok = [row for row in rows if (row.get("response") or {}).get("status_code") == 200]
    tokens = sum(row["response"]["body"]["usage"]["completion_tokens"] for row in ok)
    generating_s = None
    if watch.ready_s is not None and watch.last_growth_s is not None:
        generating_s = max(watch.last_growth_s - watch.ready_s, SAMPLE_S)
    return {
        "system": system,
        "exit_code": code,
        "lines_ok": len(ok),
        "lines_failed": len(rows) - len(ok),
        "output_tokens": tokens,
        "wall_s": wall_s,
        "ready_s": watch.ready_s,
        "generating_s": generating_s,
        "output_tok_s": tokens / generating_s if generating_s else None,
        "output_tok_s_wall": tokens / wall_s,
        "first_line_s": watch.first_line_s,
        "peak_rss_mib": watch.peak_rss_bytes / 2**20,
    }


# --- the comparison -------------------------------------------------------------------------

FIGURES = (
    ("output_tok_s", "tok/s (ready → done)", "{:,.0f}"),
    ("output_tok_s_wall", "tok/s (wall)", "{:,.0f}"),
    ("wall_s", "wall s", "{:.1f}"),
    ("first_line_s", "first line s", "{:.1f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:,.0f}"),
    ("lines_failed", "failed", "{:.0f}"),
)


def medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each system's median of every figure over its runs."""
    return {
        system: {
            key: _median([run[key] for run in runs if run["system"] == system])
            for key, _, _ in FIGURES
        }
        for system in COMMANDS
    }


def _median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def ratios(median: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Ours / vLLM's, figure by figure."""
    ours, theirs = median["kangaroo"], median["vllm"]
    return {key: ratio(ours[key], theirs[key]) for key, _, _ in FIGURES if key != "lines_failed"}


def report(median: dict[str, dict[str, Any]], ratio_of: dict[str, float | None]) -> str:
    """A Markdown table of the medians and the ratios, and the throughput verdict."""
    head = "| system | " + " | ".join(label for _, label, _ in FIGURES) + " |"
    lines = [head, "|" + " --- |" * (len(FIGURES) + 1)]
    for system, figures in median.items():
        cells = [fmt.format(figures[key]) if figures[key] is not None else "n/a"
                 for key, _, fmt in FIGURES]  # fmt: skip
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    cells = [f"{ratio_of[key]:.2f}x" if ratio_of.get(key) is not None else ""
             for key, _, _ in FIGURES]  # fmt: skip
    lines.append("| ours / vLLM | " + " | ".join(cells) + " |")
    throughput = ratio_of["output_tok_s"]
    met = throughput is not None and throughput >= 1.0
    shown = "n/a" if throughput is None else f"{throughput:.3f}"
    lines.append(f"\nthroughput ours / vLLM: {shown} (target >= 1.0: {'met' if met else 'MISSED'})")
    return "\n".join(lines)


def offline(args: argparse.Namespace) -> None:
    """Both runners on the same file, alternating; medians, ratios and results.json."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    engine = EngineSettings(max_num_seqs=args.max_num_seqs, kv_cache_gib=args.kv_cache_gib)
    setup = Setup(prepare_model(args.size, args.model), engine, args.enforce_eager)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        source = write_batch_file(Path(tmp) / "in.jsonl", args.lines, args.seed)
        for repeat in range(args.repeats):
            for system in COMMANDS:
                output, log = Path(tmp) / f"{system}.jsonl", out / f"{system}-{repeat}.log"
                run = measure(system, setup, source, output, log)
                runs.append(run | {"repeat": repeat})
                print(json.dumps(run), flush=True)
    median = medians(runs)
    ratio_of = ratios(median)
    meta = {
        "model": setup.model_dir,
        "engine": asdict(engine),
        "enforce_eager": args.enforce_eager,
        "lines": args.lines,
        "seed": args.seed,
        "repeats": args.repeats,
        "command": sys.argv,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    result = {"meta": meta, "runs": runs, "medians": median, "ratios": ratio_of}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(report(median, ratio_of))


# --- live traffic beside a batch on the server ----------------------------------------------

BATCH_TOKENS = re.compile(
    r'^kangaroo_completion_tokens_total\{[^}]*mode="batch"[^}]*\} (\S+)$', re.M
)


def live_body(prompt: str, max_tokens: int) -> dict[str, Any]:
    """A streamed greedy chat request of exactly `max_tokens` output tokens."""
    return {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "logit_bias": NO_SPECIAL_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def live_traffic(url: str, args: argparse.Namespace, seed: int) -> list[RequestRecord]:
    """Live traffic for about `--live-seconds`: every request's record."""
    workload = Workload(
        int(args.rate * args.live_seconds), prompt_words=64, output_tokens=args.live_tokens,
        concurrency=args.streams, request_rate=args.rate, seed=seed,
    )  # fmt: skip
    async with client_session(None) as session:

        async def send(prompt: str) -> RequestRecord:
            return await stream_chat(session, url, live_body(prompt, args.live_tokens))

        records, _ = await run_workload(send, workload)
    return records


def live_summary(records: list[RequestRecord], seconds: float) -> dict[str, Any]:
    """TTFT percentiles and output tokens/s of live requests sent over `seconds`."""
    ok = [r for r in records if r.ok and r.ttft is not None]
    ttfts = sorted(r.ttft * 1000 for r in ok if r.ttft is not None)
    return {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "ttft_ms_p50": statistics.median(ttfts),
        "ttft_ms_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "live_tok_s": sum(r.output_tokens for r in ok) / seconds,
        "seconds": seconds,
    }


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


def live_with_batch(
    url: str, client: openai.OpenAI, args: argparse.Namespace, data: bytes, seed: int
) -> tuple[list[RequestRecord], float, float]:
    """Live traffic while the batch of `data` (larger than the phase) runs: the live records,
    the seconds they took, and the batch's output tokens over them."""
    batch_id = submit(client, data)
    while completed(client, batch_id) < 1:
        time.sleep(0.1)
    before, started = batch_tokens(url), time.perf_counter()
    records = asyncio.run(live_traffic(url, args, seed))
    seconds = time.perf_counter() - started
    tokens = batch_tokens(url) - before
    if client.batches.retrieve(batch_id).status != "in_progress":
        raise RuntimeError("the batch ended before the live traffic: make it larger")
    client.batches.cancel(batch_id)
    while client.batches.retrieve(batch_id).status not in ("cancelled", "completed"):
        time.sleep(0.2)
    return records, seconds, tokens


def batch_alone(client: openai.OpenAI, source: Path) -> dict[str, Any]:
    """The batch file alone on the server: output tokens/s from the batch starting to run (its
    input validated) to its last line, as `measure` counts the offline runner's."""
    batch_id = submit(client, source.read_bytes())
    while (batch := client.batches.retrieve(batch_id)).status == "validating":
        time.sleep(0.02)
    started = time.perf_counter()
    while (batch := client.batches.retrieve(batch_id)).status == "in_progress":
        time.sleep(0.05)
    ended = time.perf_counter()
    while batch.status == "finalizing":
        time.sleep(0.05)
        batch = client.batches.retrieve(batch_id)
    if batch.status != "completed" or batch.usage is None:
        raise RuntimeError(f"the batch did not complete: {batch}")
    return {"batch_tok_s": batch.usage.output_tokens / (ended - started)}


def live_report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
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


def live(args: argparse.Namespace) -> None:
    """The four phases, `--repeats` times; medians, ratios and results.json."""
    args.out.mkdir(parents=True, exist_ok=True)
    engine = EngineSettings(max_num_seqs=args.max_num_seqs, kv_cache_gib=args.kv_cache_gib)
    setup = Setup(prepare_model("demo", None), engine, enforce_eager=False)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-live-") as folder:
        work = Path(folder)
        source = write_batch_file(work / "in.jsonl", args.lines, args.seed)
        # Larger than a live phase can finish: it runs all through it, and is then cancelled.
        large = write_batch_file(work / "large.jsonl", args.lines * 5, args.seed + 1)
        for repeat in range(args.repeats):
            port = free_port()
            cmd = [sys.executable, "-m", "server", "--port", str(port), *setup.engine_flags()]
            cmd += ["--kv-cache-gib", str(engine.kv_cache_gib), "--log-format", "text"]
            cmd += ["--data-dir", str(work / f"data-{repeat}")]
            log = args.out / f"server-{repeat}.log"
            with running_server(cmd, port, log, dict(os.environ)) as url:
                client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
                runs += live_rounds(url, client, args, large.read_bytes(), repeat)
                # "No live traffic": the pacer counts as live traffic anything within its last
                # CALM_TICKS, and the previous phase's ended only just now.
                time.sleep(CALM_TICKS * TICK_S + 1)
                runs.append({"phase": "batch", "repeat": repeat} | batch_alone(client, source))
            output, log = work / "offline.jsonl", args.out / f"offline-{repeat}.log"
            offline_run = measure("kangaroo", setup, source, output, log)
            runs.append({"phase": "offline", "repeat": repeat,
                         "batch_tok_s": offline_run["output_tok_s"]})  # fmt: skip
            print(json.dumps(runs[-4:], indent=1), flush=True)
    live_report(runs, args)


def live_rounds(
    url: str, client: openai.OpenAI, args: argparse.Namespace, data: bytes, repeat: int
) -> list[dict[str, Any]]:
    """`--rounds` of live traffic alone then beside a batch, in turn, so that the machine's
    drift over minutes falls on both; each phase's requests pooled over its rounds (a p99 over
    more requests)."""
    alone: list[RequestRecord] = []
    mixed: list[RequestRecord] = []
    alone_s = mixed_s = batch_tokens_sum = 0.0
    for round_ in range(args.rounds):
        seed = repeat * args.rounds + round_
        started = time.perf_counter()
        alone += asyncio.run(live_traffic(url, args, seed))
        alone_s += time.perf_counter() - started
        records, seconds, tokens = live_with_batch(url, client, args, data, seed)
        mixed += records
        mixed_s += seconds
        batch_tokens_sum += tokens
    return [
        {"phase": "live", "repeat": repeat} | live_summary(alone, alone_s),
        {"phase": "live+batch", "repeat": repeat}
        | live_summary(mixed, mixed_s)
        | {"batch_tok_s": batch_tokens_sum / mixed_s},
    ]


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("offline", help="our offline runner vs vLLM's run_batch")
    run.add_argument("--lines", type=int, default=2000)
    run.add_argument("--repeats", type=int, default=1, help="runs of each system, alternating")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--size", choices=["demo", "100m"], default="demo")
    run.add_argument("--model", help="model folder (default: built from nothing)")
    run.add_argument("--max-num-seqs", type=int, default=256)
    run.add_argument("--kv-cache-gib", type=int, default=2)
    run.add_argument("--enforce-eager", action="store_true", help="no torch.compile (both)")
    run.add_argument("--out", type=Path, default=Path("bench-results/batch"))
    side = commands.add_parser("live", help="live traffic beside a batch on our server")
    side.add_argument("--repeats", type=int, default=1)
    side.add_argument("--streams", type=int, default=16, help="most live requests at once")
    side.add_argument("--rate", type=float, default=4.0, help="live Poisson arrivals/s")
    side.add_argument("--rounds", type=int, default=4, help="live / live+batch phases in turn")
    side.add_argument("--live-seconds", type=float, default=30, help="seconds of each phase")
    side.add_argument("--live-tokens", type=int, default=64, help="output tokens per live request")
    side.add_argument("--lines", type=int, default=2000, help="lines of the batch-alone file")
    side.add_argument("--seed", type=int, default=0)
    side.add_argument("--max-num-seqs", type=int, default=256)
    side.add_argument("--kv-cache-gib", type=int, default=2)
    side.add_argument("--out", type=Path, default=Path("bench-results/batch-live"))
    args = parser.parse_args(argv)
    if args.command == "offline":
        offline(args)
    else:
        live(args)


# vLLM starts worker processes that re-import the main module (in the runs' own processes;
# the guard keeps this script importable by tests all the same).
if __name__ == "__main__":
    main()
