"""Probes: /health (the process answers) and /ready (the engine can take requests)."""

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from server.api.openapi import Health, Readiness, responses
from server.state import State

router = APIRouter()


@router.get("/health", response_model=None, responses=responses(Health))
async def health() -> dict[str, str]:
    """200 as long as the process serves HTTP (liveness)."""
    return {"status": "ok"}


@router.get("/ready", response_model=None, responses=responses(Readiness, 503))
async def ready(state: State) -> dict[str, Any]:
    """200 with the engine's load once it can generate; 503 before (readiness)."""
    engine = state.ready_engine()
    return {"status": "ready", "model": state.model_id, "engine": asdict(engine.stats())}
