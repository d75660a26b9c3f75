"""The offline batch runner on a Ray cluster, through Ray Data's core API: `map_batches` over a
pool of actors, one engine per actor (the same in-process app as the local runner), the rows
written by the driver as they come back. `ray.data.llm` is not used: it has no CPU support and
pins its own vLLM build.

Only the driver touches files. It reads and checks the input as the local runner does (lines
refused never leave it), puts the lines to run into Ray's object store in blocks, and appends
each answered row to the output or error file: the input and result files live on the driver's
machine alone, and the model must be at the same path on every node. The driver process holds
a block or two of lines at a time; the object store holds the lines to run (Ray spills it to
disk beyond its size).
"""

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import islice
from typing import Any

import pyarrow as pa
import ray
import ray.data
from ray.exceptions import RayError

from finetune.demo.build import DEMO_MODEL_NAME
from server.batch.in_process import Row, Send, answer, serving
from server.batch.lines import Line, grouped
from server.batch.offline_job import Job, Results, Written, already_written, count_lines, to_run
from server.batch.tally import Tally
from server.settings import Settings
from server.state import resolve_model_path

BLOCK_LINES = 1024  # lines per block in the object store (and per task sent to an actor)


@dataclass(frozen=True)
class RayOptions:
    """Where the job runs and what each actor (one engine) asks of the cluster."""

    address: str | None  # None: start a Ray instance on this machine
    actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float | None = None  # None: a replica's GPUs when the cluster has GPUs, else 0


def run_on_ray(job: Job, settings: Settings, concurrency: int, options: RayOptions) -> int:
    """Run `job` on `options.actors` engines on Ray; the exit code, as the local runner's."""
    tally = Tally(count_lines(job.input))
    written = already_written(job, tally.resumed)
    try:
        ray.init(address=options.address)
        # Our bar and summary report the job; Ray Data's bars would interleave with them.
        ray.data.DataContext.get_current().enable_progress_bars = False
        with Results(job, tally.add) as results:
            blocks = _put_lines(job, written, results)
            # The actors start as the dataset runs: their start-up counts in the bar's time.
            tally.open_bar()
            if blocks:
                for rows in _answers(blocks, _for_every_node(settings), concurrency, options):
                    results.write(rows)
            results.finish()
    except (RayError, ConnectionError) as exc:  # no cluster there; an engine failed or died
        tally.close_bar()
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"kangaroo batch: the Ray job stopped: {reason}", file=sys.stderr)
        return 1
    finally:
        tally.close_bar()
        print(tally.summary(), file=sys.stderr)
        ray.shutdown()
    return tally.exit_code()


def _for_every_node(settings: Settings) -> Settings:
    """The settings the actors get: the demo model is built here once, not by every actor (it
    is then looked for at the same path on every node), and keeps its served name."""
    if settings.model is not None:
        return settings
    name = settings.served_model_name or DEMO_MODEL_NAME
    return settings.model_copy(
        update={"model": resolve_model_path(settings), "served_model_name": name}
    )


def _put_lines(job: Job, written: Written, results: Results) -> list[Any]:
    """Object refs of the lines to run, in blocks (Arrow tables of JSON lines); the rows of
    refused lines are written meanwhile."""
    pending = grouped(to_run(job.input, written, results.hold))
    blocks = []
    while chunk := list(islice(pending, BLOCK_LINES)):
        blocks.append(ray.put(pa.table({"line": [_encode(line) for line in chunk]})))
        results.write([])
    return blocks


def _answers(
    blocks: list[Any], settings: Settings, concurrency: int, options: RayOptions
) -> Iterator[list[Row]]:
    """The result rows, a batch at a time, as the actors answer them."""
    dataset = ray.data.from_arrow_refs(blocks).map_batches(
        LineAnswerer,
        fn_constructor_args=(settings, concurrency),
        # Ray Data runs a few batches of an async UDF at once: half the engine's places each,
        # so that the next batch's lines wait ready while the last lines of one finish.
        batch_size=max(1, concurrency // 2),
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_cpus=options.num_cpus,
        num_gpus=_gpus_per_actor(settings, options),
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        table: pa.Table = batch
        yield [json.loads(text) for text in table["row"].to_pylist()]


def _gpus_per_actor(settings: Settings, options: RayOptions) -> float:
    """GPUs each actor asks for: as given, else one replica's (tensor x pipeline parallel size)
    when the cluster has GPUs, else none."""
    if options.num_gpus is not None:
        return options.num_gpus
    if ray.cluster_resources().get("GPU", 0) > 0:
        return float(settings.tensor_parallel_size * settings.pipeline_parallel_size)
    return 0.0


def _encode(line: Line) -> str:
    return json.dumps({"custom_id": line.custom_id, "url": line.url, "body": line.body})


def _decode(text: str) -> Line:
    item = json.loads(text)
    return Line(0, item["custom_id"], item["url"], item["body"])


class LineAnswerer:
    """Ray Data's UDF, one per actor: the in-process app with its engine, on an event loop of
    its own in a thread (Ray Data runs async UDFs on its loop; the app's lifespan and engine
    stay on ours from start to end). A batch's lines are answered concurrently, at most
    `concurrency` of the actor's lines at once."""

    def __init__(self, settings: Settings, concurrency: int):
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="kangaroo-app", daemon=True).start()
        self._slots = asyncio.Semaphore(concurrency)
        self._stack = contextlib.AsyncExitStack()
        # Blocks until the engine is ready (Ray counts it as the actor's start-up). Never
        # closed: Ray Data has no teardown hook, and the actor's end takes its engine along.
        self._send: Send = self._on_loop(self._stack.enter_async_context(serving(settings)))

    async def __call__(self, batch: pa.Table) -> pa.Table:
        """The result rows (JSON text) of a batch of lines."""
        lines = [_decode(text) for text in batch["line"].to_pylist()]
        future = asyncio.run_coroutine_threadsafe(self._answer_all(lines), self._loop)
        rows = await asyncio.wrap_future(future)
        return pa.table({"row": [json.dumps(row, ensure_ascii=False) for row in rows]})

    async def _answer_all(self, lines: list[Line]) -> list[Row]:
        return list(await asyncio.gather(*(self._answer(line) for line in lines)))

    async def _answer(self, line: Line) -> Row:
        async with self._slots:
            return await answer(self._send, line)

    def _on_loop(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()
