"""What the routes share: settings, the served model's id, the engine once it has started, and
the traffic (limits, queue, usage) in front of it; the engine's start and its end."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from finetune.demo.build import DEMO_MODEL_NAME, ensure_demo_model
from server.adapters.registry import AdapterRegistry, Served
from server.batch.files import FileStore
from server.batch.jobs import BatchStore
from server.batch.pacing import KV_CACHE_FULL
from server.engine.generation import ChoiceDelta, Engine, SamplingOptions
from server.errors import (
    EngineDeadError,
    EngineNotReadyError,
    ModelNotFoundError,
    ShuttingDownError,
)
from server.observability.metrics import Load, Metrics
from server.responses.runs import Runs
from server.responses.store import ResponseStore
from server.settings import Settings
from server.traffic.tickets import Ticket, Traffic
from server.traffic.usage import UsageStore

logger = logging.getLogger(__name__)

# A live first token slower than the least lately times this, plus a little for noise, makes
# the batch pacer back off: live requests keep their latency to within about 1.25x.
LIVE_TTFT_SLACK = 1.25
LIVE_TTFT_SLACK_S = 0.005
# The same for the median gap between live streams' tokens (one engine step each).
LIVE_GAP_SLACK = 1.25
LIVE_GAP_SLACK_S = 0.0005

EngineFactory = Callable[[Settings, str], Engine]

# How often the engine's liveness is checked, and how long the server answers 503 after the
# engine died before it exits: requests in flight get their error, and a load balancer
# polling /ready sees 503 rather than a refused connection.
ENGINE_CHECK_INTERVAL_S = 0.5
ENGINE_DEATH_GRACE_S = 1.0


@dataclass
class ServerState:
    """The state of one server process, built by `create_app` and reached through `get_state`."""

    settings: Settings
    engine_factory: EngineFactory
    model_id: str = field(init=False)
    created: int = field(default_factory=lambda: int(time.time()))
    on_fatal_error: Callable[[], None] = lambda: None
    engine: Engine | None = None
    adapters: AdapterRegistry | None = field(init=False, default=None)
    metrics: Metrics = field(init=False, default_factory=Metrics)
    traffic: Traffic = field(init=False)
    files: FileStore = field(init=False)
    batches: BatchStore = field(init=False)
    responses: ResponseStore = field(init=False)
    runs: Runs = field(default_factory=Runs)
    draining: bool = False
    engine_dead: bool = False
    engine_starting: bool = False  # the model is loading in a worker thread

    def __post_init__(self) -> None:
        self.model_id = served_model_id(self.settings)
        self.traffic = Traffic(self.settings, self.metrics, UsageStore(self.settings.usage_db))
        self.files = FileStore(self.settings.data_dir, self.settings.file_max_mib * 2**20)
        self.batches = BatchStore(self.settings.data_dir)
        self.responses = ResponseStore(
            self.settings.data_dir,
            self.settings.responses_retention_s,
            self.settings.responses_max_stored,
        )
        self.metrics.watch(self.load)
        if self.settings.adapter_dir is not None:
            self.adapters = AdapterRegistry(
                self.settings.adapter_dir,
                self.model_id,
                self.settings.max_lora_rank,
                self.settings.adapter_max_mib * 2**20,
                self.metrics,
            )

    def ready_engine(self) -> Engine:
        """The engine; 503 while it is starting, once the server drains, or if it died."""
        if self.engine_dead:
            raise EngineDeadError()
        if self.draining:
            raise ShuttingDownError("The server is shutting down; send the request elsewhere.")
        if self.engine is None:
            raise EngineNotReadyError()
        return self.engine

    def model_label(self, adapter: Served | None) -> str:
        """How metrics, usage and logs name the model: the base model's id or the adapter name."""
        return self.model_id if adapter is None else adapter.record.name

    def load(self) -> Load:
        """The figures behind the metrics' gauges."""
        admission = self.traffic.admission
        engine = self.engine if self.engine is not None and not self.engine_dead else None
        stats = engine.stats() if engine is not None else None
        return Load(admission.running, admission.waiting, self.draining, stats)

    async def resolve_model(self, model: str) -> Served | None:
        """None for the base model, the adapter version for an adapter; else 404."""
        if model == self.model_id:
            return None
        if self.adapters is None:
            raise ModelNotFoundError(model)
        return await self.adapters.resolve(model)

    def generate(
        self,
        ticket: Ticket,
        request_id: str,
        prompt_ids: list[int],
        options: SamplingOptions,
        adapter: Served | None,
    ) -> AsyncIterator[list[ChoiceDelta]]:
        """Start generating with the base model or an adapter (held until the stream ends)."""
        engine = self.ready_engine()
        ticket.generating(request_id, engine.abort)
        if ticket.batch:  # a batch line's result is collected whole: no per-token deltas
            options = replace(options, whole=True)
        if adapter is None:
            return engine.generate(request_id, prompt_ids, options)
        assert self.adapters is not None  # an adapter was resolved by the registry
        deltas = engine.generate(request_id, prompt_ids, options, adapter.ref)
        return self.adapters.hold(adapter, deltas)

    def live_pressure(self) -> str | None:
        """Why live requests are under pressure now (the batch pacer backs off), or None.

        Called once per pacer tick: it takes the slowest live first token and the live token
        gaps since the last call.
        """
        traffic = self.traffic
        slowest = max(traffic.live_latency.slowest_since_last_call(), traffic.longest_live_wait())
        gaps = traffic.live_latency.gaps_since_last_call()
        # Queues and a full KV cache matter only while a live request is there to suffer them:
        # with none, batch lines may take all the room they find.
        if traffic.live_in_flight():
            if waiting := traffic.live_waiting():
                return f"{waiting} live requests wait for a place"
            engine = self.engine if self.engine is not None and not self.engine_dead else None
            stats = engine.stats() if engine is not None else None
            if stats is not None and stats.num_waiting_requests:
                return f"{stats.num_waiting_requests} requests wait in the engine"
            if stats is not None and stats.kv_cache_usage >= KV_CACHE_FULL:
                return f"the KV cache is {stats.kv_cache_usage:.0%} full"
        return self._slow_first_token(slowest) or _slow_tokens(gaps)

    def _slow_first_token(self, slowest: float) -> str | None:
        """Pressure when the slowest recent live first token took clearly longer than the least
        seen lately (what the engine gives with nothing in the way)."""
        least = self.traffic.live_latency.least() or 0.0
        if slowest > least * LIVE_TTFT_SLACK + LIVE_TTFT_SLACK_S:
            return (
                f"a live request waited {slowest * 1000:.0f} ms for its first token "
                f"(least lately: {least * 1000:.0f} ms)"
            )
        return None

    async def run(self) -> None:
        """The engine's life: start it, then watch it until it dies or the app stops.

        Start-up runs in worker threads, so /health and /ready answer meanwhile. A failed start
        or a dead engine is fatal: it is logged and `on_fatal_error` asks the HTTP server to
        stop with a failure code, so a supervisor restarts the process instead of leaving a
        server that can never generate.
        """
        try:
            await asyncio.to_thread(self.traffic.usage.start)
            await self._start_engine()
        except Exception:
            logger.exception("The engine failed to start")
            self.on_fatal_error()
            return
        # vLLM offers no event for its engine's death, only a flag: poll it.
        while self.engine is not None and self.engine.is_alive():  # noqa: ASYNC110
            await asyncio.sleep(ENGINE_CHECK_INTERVAL_S)
        if self.engine is not None:
            logger.error("The engine died; failing requests and exiting so a supervisor restarts")
            self.engine_dead = True
            self.traffic.stop_all(EngineDeadError())
            await asyncio.sleep(ENGINE_DEATH_GRACE_S)
            self.on_fatal_error()

    async def drain(self, timeout_s: float) -> None:
        """Take no new requests; let those running finish for up to `timeout_s`, then stop them."""
        self.draining = True
        logger.info("Draining: %d request(s) in flight", len(self.traffic.tickets))
        if not await self._settled(timeout_s):
            logger.warning("Drain timeout: stopping %d request(s)", len(self.traffic.tickets))
            self.traffic.stop_all(
                ShuttingDownError("The server shut down before the request could finish.")
            )
            await self._settled(timeout_s=5.0)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the engine if it started (`wait`: see `Engine.shutdown`), write the usage
        counted so far, close the files."""
        if self.engine is not None:
            self.engine.shutdown(wait)
            self.engine = None
        self.traffic.usage.close()
        self.files.close()
        self.batches.close()
        self.responses.close()

    async def _start_engine(self) -> None:
        self.engine_starting = True
        engine = await asyncio.to_thread(self._load_engine)
        if self.adapters is not None:
            try:
                await self.adapters.start(engine, model_folder(engine.model_path))
            except BaseException:
                engine.shutdown()
                raise
        self.engine = engine
        logger.info("Engine ready: serving %s as '%s'", engine.model_path, self.model_id)

    def _load_engine(self) -> Engine:
        # In a worker thread, which runs to its end even if the app stops meanwhile: the flag
        # tells the process it would have to wait for it.
        try:
            return self.engine_factory(self.settings, resolve_model_path(self.settings))
        finally:
            self.engine_starting = False

    async def _settled(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False if some still are after `timeout_s`."""
        try:
            await asyncio.wait_for(self.traffic.idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def _slow_tokens(gaps: tuple[float, float] | None) -> str | None:
    """Pressure when live streams' tokens lately came clearly further apart than they do
    with nothing in the way: each engine step is longer, and so is every first token."""
    if gaps is None:
        return None
    typical, least = gaps
    if typical > least * LIVE_GAP_SLACK + LIVE_GAP_SLACK_S:
        return (
            f"live tokens came {typical * 1000:.1f} ms apart (least lately: {least * 1000:.1f} ms)"
        )
    return None


def resolve_model_path(settings: Settings) -> str:
    """The model folder or hub id to load; builds the demo model when none is configured."""
    if settings.model is None:
        return str(ensure_demo_model(settings.cache_dir))
    return settings.model


def model_folder(model_path: str) -> Path:
    """The local folder of a model folder or of a hub id already in the local cache."""
    if Path(model_path).expanduser().is_dir():
        return Path(model_path).expanduser()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_path, local_files_only=True))


def served_model_id(settings: Settings) -> str:
    """The id clients send as `model`."""
    if settings.served_model_name:
        return settings.served_model_name
    if settings.model is None:
        return DEMO_MODEL_NAME
    return Path(settings.model.rstrip("/")).name or settings.model


async def get_state(request: Request) -> ServerState:
    """FastAPI dependency: the process's `ServerState`.

    Async on purpose: FastAPI runs a plain function dependency in a worker thread, a thread
    hop on every request for a dictionary lookup.
    """
    state: ServerState = request.app.state.kangaroo
    return state


State = Annotated[ServerState, Depends(get_state)]
