"""What the routes share: settings, the served model's id and the engine once it has started."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from server.adapters import AdapterRegistry, Served
from server.demo_model import DEMO_MODEL_NAME, ensure_demo_model
from server.errors import EngineNotReadyError, ModelNotFoundError
from server.generation import ChoiceDelta, Engine, SamplingOptions
from server.settings import Settings

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings, str], Engine]


@dataclass
class ServerState:
    """The state of one server process, built by `create_app` and reached through `get_state`."""

    settings: Settings
    engine_factory: EngineFactory
    model_id: str = field(init=False)
    created: int = field(default_factory=lambda: int(time.time()))
    on_start_failure: Callable[[], None] = lambda: None
    engine: Engine | None = None
    adapters: AdapterRegistry | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.model_id = served_model_id(self.settings)
        if self.settings.adapter_dir is not None:
            self.adapters = AdapterRegistry(
                self.settings.adapter_dir,
                self.model_id,
                self.settings.max_lora_rank,
                self.settings.adapter_max_mib * 2**20,
            )

    def ready_engine(self) -> Engine:
        """The engine, or 503 while it is still starting."""
        if self.engine is None:
            raise EngineNotReadyError()
        return self.engine

    async def resolve_model(self, model: str) -> Served | None:
        """None for the base model, the adapter version for an adapter; else 404."""
        if model == self.model_id:
            return None
        if self.adapters is None:
            raise ModelNotFoundError(model)
        return await self.adapters.resolve(model)

    def generate(
        self,
        request_id: str,
        prompt_ids: list[int],
        options: SamplingOptions,
        adapter: Served | None,
    ) -> AsyncIterator[list[ChoiceDelta]]:
        """Start generating with the base model or an adapter (held until the stream ends)."""
        engine = self.ready_engine()
        if adapter is None:
            return engine.generate(request_id, prompt_ids, options)
        assert self.adapters is not None  # an adapter was resolved by the registry
        deltas = engine.generate(request_id, prompt_ids, options, adapter.ref)
        return self.adapters.hold(adapter, deltas)

    async def start_engine(self) -> None:
        """Load the model in a worker thread, so /health and /ready answer meanwhile.

        A failure is fatal: it is logged and `on_start_failure` asks the HTTP server to stop, so
        a supervisor sees the process exit instead of a server that stays unready forever.
        """
        try:
            model_path = await asyncio.to_thread(resolve_model_path, self.settings)
            engine = await asyncio.to_thread(self.engine_factory, self.settings, model_path)
            if self.adapters is not None:
                try:
                    await self.adapters.start(engine, model_folder(engine.model_path))
                except BaseException:
                    engine.shutdown()
                    raise
            self.engine = engine
            logger.info("Engine ready: serving %s as '%s'", model_path, self.model_id)
        except Exception:
            logger.exception("The engine failed to start")
            self.on_start_failure()

    def shutdown(self) -> None:
        """Stop the engine if it started."""
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None


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


def get_state(request: Request) -> ServerState:
    """FastAPI dependency: the process's `ServerState`."""
    state: ServerState = request.app.state.kangaroo
    return state


State = Annotated[ServerState, Depends(get_state)]
