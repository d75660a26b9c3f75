"""Hot-loading adapters under load: push → first token, and what a push costs running streams.

    python scripts/bench_adapters.py --out scripts/results/adapters

Starts our server on the demo model with an adapter registry, then runs the same streaming
workload on the base model (16 streams x 256 tokens by default) three times: without pushes,
with an adapter pushed every `--push-every` seconds, and without pushes again (drift check).
Each push uploads a new r=16 adapter on all seven projections (random weights: the server's
checks and probe treat it like a trained one), as `python -m finetune push` does, then streams
a chat with it. Printed: push → first token of the new adapter (target < 1 s) and the
inter-token latency p99 of the running streams with pushes against without (target <= 1.5x).
"""

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench import free_port, running_server  # noqa: E402
from scripts.bench_report import percentile, summarize  # noqa: E402
from scripts.loadgen import Workload, http_sender, run_workload  # noqa: E402

MODEL = "kangaroo-demo"
ADMIN_KEY = "bench-admin-key"
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def random_adapter(
    base: Path, out: Path, seed: int = 0, trained: bool = True, manifest: bool = True, **lora: Any
) -> Path:
    """A PEFT LoRA adapter folder for `base` with a finetune manifest (r=4 on q/v by default).

    `trained` gives lora_B random weights (PEFT starts it at zero: an adapter that does nothing).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from server.contract import MANIFEST_NAME, base_fingerprint

    values: dict[str, Any] = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(**values | lora))
    if trained:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.5)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)
    if manifest:
        config = json.loads((base / "config.json").read_text())
        fingerprint = base_fingerprint(config, AutoTokenizer.from_pretrained(base))
        record = {
            "kind": "lora",
            "base_model": {"fingerprint": fingerprint},
            "final_eval_loss": 1.25,
        }
        (out / MANIFEST_NAME).write_text(json.dumps(record))
    return out


async def push_and_chat(url: str, name: str, folder: Path) -> dict[str, float]:
    """Upload `folder` as `name`, then stream a chat with it: the timings in seconds."""
    from server.adapters.checks import ADAPTER_FILES

    files = [
        ("files", (n, (folder / n).read_bytes())) for n in ADAPTER_FILES if (folder / n).exists()
    ]
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"model": name, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        started = time.perf_counter()
        pushed = await client.post("/adapters", data={"name": name}, files=files)
        pushed.raise_for_status()
        stored = time.perf_counter()
        async with client.stream("POST", "/chat/completions", json=body | {"stream": True}) as r:
            async for line in r.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break
        first_token = time.perf_counter()
    return {"push_s": stored - started, "push_to_first_token_s": first_token - started}


async def streams_with_pushes(
    url: str, workload: Workload, adapters: list[Path], every_s: float | None
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Run the workload on the base model, pushing `adapters` one by one meanwhile."""
    pushes: list[dict[str, float]] = []

    async def pusher() -> None:
        for i, folder in enumerate(adapters):
            await asyncio.sleep(every_s or 0)
            pushes.append(await push_and_chat(url, f"bench-{time.time_ns()}-{i}", folder))

    async with http_sender(url, MODEL, workload, api_key=ADMIN_KEY) as send:
        task = asyncio.create_task(pusher()) if every_s else None
        records, duration = await run_workload(send, workload)
        if task is not None:
            await task
    return summarize(records, duration), pushes


def main() -> None:
    """Build adapters, start the server, run the three phases, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=256, help="output tokens per stream")
    parser.add_argument("--requests", type=int, default=64, help="requests per phase")
    parser.add_argument("--pushes", type=int, default=6)
    parser.add_argument("--push-every", type=float, default=1.5, help="seconds between pushes")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--out", type=Path, help="folder for results.json")
    args = parser.parse_args()

    from finetune.demo.build import ensure_demo_model
    from server.settings import load_settings

    model_dir = ensure_demo_model(load_settings([]).cache_dir)
    workload = Workload(args.requests, output_tokens=args.tokens, concurrency=args.streams)
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as tmp:
        work = Path(tmp)
        lora = {"r": args.rank, "lora_alpha": 2 * args.rank, "target_modules": PROJECTIONS}
        adapters = [
            random_adapter(model_dir, work / f"a{i}", seed=i, **lora)
            for i in range(args.pushes + 1)
        ]
        port = free_port()
        cmd = [
            sys.executable, "-m", "server", "--port", str(port), "--log-level", "warning",
            "--adapter-dir", str(work / "root"), "--max-lora-rank", str(max(16, args.rank)),
            "--admin-key", ADMIN_KEY,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with running_server(cmd, port, work / "server.log", env, ADMIN_KEY) as url:
            asyncio.run(push_and_chat(url, "warm-up", adapters[-1]))  # first LoRA use warms up
            phases = {
                "no pushes": asyncio.run(streams_with_pushes(url, workload, [], None))[0],
            }
            loaded, pushes = asyncio.run(
                streams_with_pushes(url, workload, adapters[:-1], args.push_every)
            )
            phases["pushes"] = loaded
            phases["no pushes, again"] = asyncio.run(streams_with_pushes(url, workload, [], None))[
                0
            ]
    report(args, phases, pushes)


def report(
    args: argparse.Namespace, phases: dict[str, Any], pushes: list[dict[str, float]]
) -> None:
    """Print the table and the verdicts; write results.json when --out is given."""
    quiet = [phases["no pushes"]["itl_ms_p99"], phases["no pushes, again"]["itl_ms_p99"]]
    itl_ratio = phases["pushes"]["itl_ms_p99"] / (sum(quiet) / 2)
    to_first = [p["push_to_first_token_s"] for p in pushes]
    print(f"{'phase':18s} {'tok/s':>8s} {'ITL p50 ms':>11s} {'ITL p99 ms':>11s} {'failed':>7s}")
    for name, row in phases.items():
        print(
            f"{name:18s} {row['output_tok_s']:8,.0f} {row['itl_ms_p50']:11.1f}"
            f" {row['itl_ms_p99']:11.1f} {row['requests_failed']:7d}"
        )
    print(
        f"push -> first token: median {percentile(to_first, 50):.3f} s, max {max(to_first):.3f} s"
        f" over {len(pushes)} pushes (target < 1 s)"
    )
    print(f"ITL p99 with pushes / without: x{itl_ratio:.2f} (target <= 1.5x)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "settings": vars(args) | {"out": str(args.out)},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "phases": phases,
            "pushes": pushes,
            "itl_p99_ratio": itl_ratio,
            "push_to_first_token_s": {"median": percentile(to_first, 50), "max": max(to_first)},
        }
        (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
