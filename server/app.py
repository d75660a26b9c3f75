"""`create_app(settings)`: the FastAPI application and its lifespan (engine start and stop)."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from server.api.inprocess import call_route
from server.api.openapi import install_openapi
from server.api.routes import (
    adapters,
    batches,
    chat,
    completions,
    files,
    health,
    metrics,
    models,
    playground,
    responses,
    usage,
)
from server.batch.pacing import Pacer
from server.batch.runner import BatchRunner
from server.engine.generation import Engine
from server.errors import install_error_handlers
from server.observability.request_id import RequestId
from server.settings import Settings
from server.state import EngineFactory, ServerState
from server.traffic.auth import KeyAuth, KeyRing, admin_paths, open_paths
from server.traffic.body_limit import BodyLimit
from server.traffic.request_log import RequestLog

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    engine_factory: EngineFactory | None = None,
    on_fatal_error: Callable[[], None] = lambda: None,
    in_process: bool = False,
) -> FastAPI:
    """Build the app; the engine starts in the background once the server is up.

    `on_fatal_error` runs when the engine cannot start or dies (the CLI stops the process).
    `in_process` is for an app driven from inside its process (the offline batch runner): it
    opens no port, and it does not run the batches stored in `data_dir`.
    """
    state = ServerState(
        settings=settings,
        engine_factory=engine_factory or _start_vllm,
        on_fatal_error=on_fatal_error,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lives = [asyncio.create_task(state.run())]
        runner = None if in_process else _batch_runner(app, state, keys)
        if runner is not None:
            lives.append(asyncio.create_task(runner.run_forever()))
        try:
            yield
        finally:
            if runner is not None:
                await runner.stop()
            await state.runs.stop_all()
            for task in reversed(lives):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Offline, every answer is on disk by now: the engine need not exit gracefully.
            state.shutdown(wait=not in_process)

    keys = KeyRing.from_settings(settings)
    public = open_paths(settings, playground.PAGE_PATHS)
    if not keys.enabled and not in_process:
        logger.warning(
            "No API keys configured: anyone who can reach %s:%d may use the API, and the "
            "admin API answers only this machine. Set api_keys / admin_key (KANGAROO_API_KEYS, "
            "KANGAROO_ADMIN_KEY) before listening on a public address.",
            settings.host,
            settings.port,
        )
    app = FastAPI(title="Kangaroo", version="0.1.0", lifespan=lifespan)
    # The last added runs first. CORS answers browsers' preflights (they carry no key) and
    # labels 401s too, so a page can read why it was refused; the request log sees every
    # request, refused or not; the body limit applies only to callers with a valid key.
    app.add_middleware(
        BodyLimit,
        max_bytes=int(settings.max_body_mib * 2**20),
        exempt=(adapters.router.prefix, files.router.prefix),
    )
    app.add_middleware(
        KeyAuth,
        keys=keys,
        open_paths=public,
        admin_paths=admin_paths(settings),
    )
    app.add_middleware(RequestLog, metrics=state.metrics, limiter=state.traffic.limiter)
    app.add_middleware(RequestId)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-request-id"],
        )
    app.state.kangaroo = state
    install_error_handlers(app)
    for module in (
        chat,
        completions,
        models,
        files,
        batches,
        responses,
        adapters,
        usage,
        metrics,
        health,
        playground,
    ):
        app.include_router(module.router)
    install_openapi(app, keys.enabled, public, admin_paths(settings))
    return app


def _start_vllm(settings: Settings, model_path: str) -> Engine:
    # Imported here so that importing the app (and fast HTTP tests) does not load vLLM.
    from server.engine.vllm_engine import VllmEngine

    engine = VllmEngine.start(settings, model_path)
    _freeze_heap()
    return engine


def _freeze_heap() -> None:
    """Put every object alive now out of the garbage collector's reach, as `vllm serve` does.

    With vLLM and torch loaded this process holds some 670,000 objects, and a full collection
    of them took 420 ms here (measured with gc.callbacks): a pause of every stream at once,
    whenever enough objects outlive the young generations. Frozen, they are never scanned
    again; what requests allocate later is still collected.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("Froze %d start-up objects out of the garbage collector's reach", frozen)


def _batch_runner(app: FastAPI, state: ServerState, keys: KeyRing) -> BatchRunner:
    """The runner of the batches stored in `data_dir`: each line goes through the live route
    as the key that made the batch."""
    settings = state.settings
    pacer = Pacer(
        # A 32nd of the engine's places stays free: a live request finds one at once (and the
        # first live arrival after a quiet spell sheds the batch down to one line).
        min(
            settings.batch_concurrency,
            max(1, settings.max_num_seqs - max(1, settings.max_num_seqs // 32)),
        ),
        state.live_pressure,
        lambda: state.traffic.longest_live_wait() > 0,
    )
    state.traffic.on_live_arrival = pacer.live_arrived
    return BatchRunner(
        state.batches,
        state.files,
        lambda owner, path, body, gone: call_route(app, keys.caller_by_id(owner), path, body, gone),
        pacer,
        settings.batch_max_lines,
    )
