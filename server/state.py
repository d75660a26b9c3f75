"""What the routes share: settings, the served model's id and the engine once it has started."""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from server.demo_model import DEMO_MODEL_NAME, ensure_demo_model
from server.errors import EngineNotReadyError, ModelNotFoundError
from server.generation import Engine
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

    def __post_init__(self) -> None:
        self.model_id = served_model_id(self.settings)

    def ready_engine(self) -> Engine:
        """The engine, or 503 while it is still starting."""
        if self.engine is None:
            raise EngineNotReadyError()
        return self.engine

    def check_model(self, model: str) -> None:
        """404 unless `model` is the id this server serves."""
        if model != self.model_id:
            raise ModelNotFoundError(model)

    async def start_engine(self) -> None:
        """Load the model in a worker thread, so /health and /ready answer meanwhile.

        A failure is fatal: it is logged and `on_start_failure` asks the HTTP server to stop, so
        a supervisor sees the process exit instead of a server that stays unready forever.
        """
        try:
            model_path = await asyncio.to_thread(resolve_model_path, self.settings)
            self.engine = await asyncio.to_thread(self.engine_factory, self.settings, model_path)
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
