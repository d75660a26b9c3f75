"""Benchmark OpenAI-compatible servers: throughput, TTFT and inter-token latency.

    # against any running server
    python scripts/bench.py sweep --url http://127.0.0.1:8000/v1 --model kangaroo-demo

    # Kangaroo vs vLLM's own OpenAI server vs the bare engine, same model and settings, one run
    python scripts/bench.py compare --out scripts/results/demo

`compare` starts each system in turn on this machine (never two at once), runs the same
concurrency sweep against it, and writes results.json, results.md and two PNG plots.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench_report import markdown_table, median_rows, plot, ratio, summarize  # noqa: E402
from scripts.loadgen import TokenCounter, Workload, http_sender, run_workload  # noqa: E402

SERVED_NAME = "bench-model"


@dataclass(frozen=True)
class EngineSettings:
    """Engine settings every system under comparison gets."""

    max_model_len: int = 2048
    max_num_seqs: int = 256
    kv_cache_gib: int = 2
    dtype: str = "float32"  # the demo and 100m models are saved in float32


@dataclass(frozen=True)
class Sweep:
    """The workload at each concurrency level."""

    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    prompt_words: int = 64
    output_tokens: int = 128
    request_rate: float | None = None
    min_requests: int = 32
    requests_per_stream: int = 4
    seed: int = 0

    def workload(self, concurrency: int) -> Workload:
        """The workload at one concurrency level: enough requests for stable percentiles."""
        n = max(self.min_requests, self.requests_per_stream * concurrency)
        return Workload(
            n, self.prompt_words, self.output_tokens, concurrency, self.request_rate, seed=self.seed
        )

    def total_requests(self) -> int:
        """Requests in the whole sweep (for the progress bar)."""
        return sum(self.workload(c).num_requests for c in self.concurrencies)


async def run_sweep(
    system: str, make_sender: Callable[[Workload], Any], sweep: Sweep
) -> list[dict[str, Any]]:
    """Run every concurrency level against one system; one summary row per level."""
    rows = []
    with tqdm(total=sweep.total_requests(), desc=system, unit="req") as bar:
        for concurrency in sweep.concurrencies:
            workload = sweep.workload(concurrency)
            async with make_sender(workload) as send:
                records, duration = await run_workload(send, workload, lambda: bar.update())
            rows.append(
                {"system": system, "concurrency": concurrency, **summarize(records, duration)}
            )
            bar.set_postfix(c=concurrency, tok_s=f"{rows[-1]['output_tok_s']:,.0f}")
    return rows


# --- systems under test -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(
    cmd: list[str], port: int, log: Path, env: dict[str, str], api_key: str | None = None
) -> Iterator[str]:
    """Start a server process, wait until it serves /v1/models, stop it afterwards."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{cmd[2]} exited with {process.returncode}; see {log}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/models", timeout=5, headers=headers).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[2]} not ready after 600 s; see {log}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def _shared_flags(model_dir: str, port: int, engine: EngineSettings) -> list[str]:
    """Flags both servers spell the same way: model, name, port and engine settings."""
    return [
        "--model", model_dir,
        "--served-model-name", SERVED_NAME,
        "--port", str(port),
        "--dtype", engine.dtype,
        "--max-model-len", str(engine.max_model_len),
        "--max-num-seqs", str(engine.max_num_seqs),
    ]  # fmt: skip


def kangaroo_cmd(model_dir: str, port: int, engine: EngineSettings) -> list[str]:
    """Our server with the shared engine settings."""
    return [
        sys.executable, "-m", "server", *_shared_flags(model_dir, port, engine),
        "--kv-cache-gib", str(engine.kv_cache_gib), "--log-level", "warning",
    ]  # fmt: skip


def vllm_server_cmd(model_dir: str, port: int, engine: EngineSettings) -> list[str]:
    """vLLM's own OpenAI server, as its users start it, with the shared engine settings.

    Its KV cache size comes from VLLM_CPU_KVCACHE_SPACE, set by `sweep_server`.
    """
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        *_shared_flags(model_dir, port, engine), "--host", "127.0.0.1",
    ]  # fmt: skip


async def sweep_server(
    system: str,
    cmd_for: Callable[[str, int, EngineSettings], list[str]],
    model_dir: str,
    engine: EngineSettings,
    sweep: Sweep,
    out: Path,
) -> list[dict[str, Any]]:
    """Start one server, sweep it, stop it."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(engine.kv_cache_gib)}
    with running_server(cmd_for(model_dir, port, engine), port, out / f"{system}.log", env) as url:

        def make_sender(workload: Workload) -> Any:
            return http_sender(url, SERVED_NAME, workload)

        return await run_sweep(system, make_sender, sweep)


def sweep_engine_in_subprocess(
    model_dir: str, engine: EngineSettings, sweep: Sweep, out: Path
) -> list[dict[str, Any]]:
    """The bare engine, in its own process like the servers (so no state is shared)."""
    result = out / "engine-rows.json"
    cmd = [
        sys.executable,
        str(Path(__file__)),
        "_engine",
        "--model-dir",
        model_dir,
        "--engine",
        json.dumps(asdict(engine)),
        "--sweep",
        json.dumps(asdict(sweep)),
        "--result",
        str(result),
    ]
    subprocess.run(cmd, cwd=REPO, check=True)
    rows: list[dict[str, Any]] = json.loads(result.read_text())
    result.unlink()
    return rows


async def _engine_main(model_dir: str, engine: EngineSettings, sweep: Sweep, result: Path) -> None:
    from scripts.bench_engine import engine_sender

    engine_args = {
        "served_model_name": SERVED_NAME,
        "dtype": engine.dtype,
        "max_model_len": engine.max_model_len,
        "max_num_seqs": engine.max_num_seqs,
    }

    # One engine for the whole sweep, as each server keeps one engine across levels.
    workload = sweep.workload(1)
    async with engine_sender(model_dir, engine_args, workload, engine.kv_cache_gib) as send:
        rows = await run_sweep(
            "engine (AsyncLLM, no HTTP)", lambda _: contextlib.nullcontext(send), sweep
        )
    await asyncio.to_thread(result.write_text, json.dumps(rows))


# --- commands -------------------------------------------------------------------------------


def prepare_model(size: str, model: str | None) -> str:
    """The model folder to benchmark: given, or the demo / ~100 M model built from nothing."""
    if model:
        return model
    from finetune.demo.build import BENCH_100M_SHAPE, build_base_model, ensure_demo_model
    from server.settings import load_settings

    cache = load_settings([]).cache_dir
    if size == "demo":
        return str(ensure_demo_model(cache))
    target = cache / "bench-100m"
    if not (target / "config.json").is_file():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            build_base_model(Path(tmp) / "m", shape=BENCH_100M_SHAPE)
            (Path(tmp) / "m").rename(target)
    return str(target)


def compare(args: argparse.Namespace) -> None:
    """Ours vs vLLM's server vs the bare engine: same model, settings and workload.

    With --repeats N the three run in turn N times (ABCABC...), so drift of the machine over
    time spreads over all of them; the table holds each figure's median over the repeats.
    """
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model(args.size, args.model)
    engine = EngineSettings(max_num_seqs=args.max_num_seqs)
    sweep = _sweep_from(args)
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        rows = asyncio.run(sweep_server("kangaroo", kangaroo_cmd, model_dir, engine, sweep, out))
        rows += asyncio.run(
            sweep_server("vLLM api_server", vllm_server_cmd, model_dir, engine, sweep, out)
        )
        rows += sweep_engine_in_subprocess(model_dir, engine, sweep, out)
        runs += [row | {"repeat": repeat} for row in rows]
    rows = median_rows(runs)
    verdict = ratios(rows, max(sweep.concurrencies), min(sweep.concurrencies))
    meta = {
        "model": model_dir,
        "engine": asdict(engine),
        "sweep": asdict(sweep),
        "repeats": args.repeats,
        "command": sys.argv,
        "runs": runs,
    }
    write_results(out, rows, verdict, meta)
    print(markdown_table(rows))
    print(ratios_text(verdict))


def sweep_one(args: argparse.Namespace) -> None:
    """Sweep one running server."""
    counter = pick_token_counter(args.tokenizer)
    sweep = _sweep_from(args)

    def make_sender(workload: Workload) -> Any:
        return http_sender(args.url.rstrip("/"), args.model, workload, counter)

    rows = asyncio.run(run_sweep(args.url, make_sender, sweep))
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(
        args.out, rows, {}, {"url": args.url, "sweep": asdict(sweep), "command": sys.argv}
    )
    print(markdown_table(rows))


def pick_token_counter(tokenizer_path: str | None) -> tuple[str, TokenCounter] | None:
    """How to count tokens of servers that send no usage: tiktoken if its encoding is on disk
    (no download is attempted), else the served model's tokenizer; None = count chunks."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(Path.home() / ".cache" / "tiktoken"))
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base")
        return "tiktoken:cl100k_base", lambda text: len(encoding.encode(text))
    except Exception:  # no cached encoding and no network
        pass
    if tokenizer_path:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_path)
        return f"tokenizer:{tokenizer_path}", lambda text: len(
            tok.encode(text, add_special_tokens=False)
        )
    return None


def ratios(rows: list[dict[str, Any]], top: int, bottom: int) -> dict[str, Any]:
    """The comparison figures the targets are stated in."""
    at = {(r["system"], r["concurrency"]): r for r in rows}
    ours, vllm = at[("kangaroo", top)], at[("vLLM api_server", top)]
    engine = at[("engine (AsyncLLM, no HTTP)", top)]
    return {
        "concurrency": top,
        "throughput_vs_vllm_server": ratio(ours["output_tok_s"], vllm["output_tok_s"]),
        "throughput_vs_engine": ratio(ours["output_tok_s"], engine["output_tok_s"]),
        "ttft_p99_vs_vllm_server": ratio(ours["ttft_ms_p99"], vllm["ttft_ms_p99"]),
        "throughput_scaling": ratio(ours["output_tok_s"], at[("kangaroo", bottom)]["output_tok_s"]),
        "scaling_from": bottom,
    }


TARGETS = {
    "throughput_vs_vllm_server": (">=", 1.10),
    "throughput_vs_engine": (">=", 0.95),
    "ttft_p99_vs_vllm_server": ("<=", 0.90),
    "throughput_scaling": (">=", 17.0),
}


def ratios_text(verdict: dict[str, Any]) -> str:
    """The ratios with their targets, one line each."""
    lines = [f"\nRatios at concurrency {verdict['concurrency']} (kangaroo / other):"]
    for key, (op, target) in TARGETS.items():
        value = verdict[key]
        met = value is not None and (value >= target if op == ">=" else value <= target)
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"  {key:28s} {shown:>7s}  target {op} {target}  {'met' if met else 'MISSED'}")
    return "\n".join(lines)


def write_results(
    out: Path, rows: list[dict[str, Any]], verdict: dict[str, Any], meta: dict[str, Any]
) -> None:
    """results.json, results.md and the two plots."""
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    (out / "results.json").write_text(
        json.dumps({"meta": meta | {"machine": machine}, "rows": rows, "ratios": verdict}, indent=2)
    )
    text = markdown_table(rows) + ("\n" + ratios_text(verdict) if verdict else "")
    (out / "results.md").write_text(text + "\n")
    plot(rows, "output_tok_s", "output tokens / s", out / "throughput.png")
    plot(rows, "ttft_ms_p99", "TTFT p99 (ms)", out / "ttft_p99.png")


def _sweep_from(args: argparse.Namespace) -> Sweep:
    return Sweep(
        tuple(args.concurrency),
        args.prompt_words,
        args.output_tokens,
        args.request_rate,
        args.min_requests,
        args.requests_per_stream,
        args.seed,
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("sweep", "compare"):
        sub = commands.add_parser(name)
        sub.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
        sub.add_argument("--prompt-words", type=int, default=64)
        sub.add_argument("--output-tokens", type=int, default=128)
        sub.add_argument(
            "--request-rate", type=float, help="Poisson arrivals/s (default: closed loop)"
        )
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--min-requests", type=int, default=32, help="per concurrency level")
        sub.add_argument("--requests-per-stream", type=int, default=4, help="requests = this × c")
        sub.add_argument("--out", type=Path, default=Path("bench-results"))
    sweep_cmd = commands.choices["sweep"]
    sweep_cmd.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000/v1")
    sweep_cmd.add_argument("--model", required=True)
    sweep_cmd.add_argument("--tokenizer", help="count tokens with this tokenizer if no usage")
    compare_cmd = commands.choices["compare"]
    compare_cmd.add_argument("--size", choices=["demo", "100m"], default="demo")
    compare_cmd.add_argument("--model", help="model folder (default: built from nothing)")
    compare_cmd.add_argument("--max-num-seqs", type=int, default=256)
    compare_cmd.add_argument(
        "--repeats", type=int, default=1, help="runs of each system, interleaved"
    )
    engine_cmd = commands.add_parser("_engine")  # internal: the bare engine in its own process
    for flag in ("--model-dir", "--engine", "--sweep", "--result"):
        engine_cmd.add_argument(flag, required=True)
    args = parser.parse_args(argv)
    if args.command == "compare":
        compare(args)
    elif args.command == "sweep":
        sweep_one(args)
    else:
        sweep = json.loads(args.sweep)
        sweep["concurrencies"] = tuple(sweep["concurrencies"])
        asyncio.run(
            _engine_main(
                args.model_dir,
                EngineSettings(**json.loads(args.engine)),
                Sweep(**sweep),
                Path(args.result),
            )
        )


# vLLM starts worker processes that re-import the main module.
if __name__ == "__main__":
    main()
