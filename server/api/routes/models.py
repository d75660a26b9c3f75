"""GET /v1/models and /v1/models/{id}: the base model and every adapter, in OpenAI's format."""

from typing import Any

from fastapi import APIRouter

from server.adapters.store import VersionRecord
from server.api.openapi import ModelCard, ModelList, responses
from server.state import ServerState, State

router = APIRouter()


@router.get("/v1/models", response_model=None, responses=responses(ModelList, 503))
async def list_models(state: State) -> dict[str, Any]:
    """The base model, then each adapter (the version its name means now)."""
    cards = [_base_card(state)]
    if state.adapters is not None:
        for name in state.adapters.names():
            record = state.adapters.active_record(name)
            if record is not None:
                cards.append(_adapter_card(state, name, record))
    return {"object": "list", "data": cards}


@router.get(
    "/v1/models/{model_id:path}", response_model=None, responses=responses(ModelCard, 404, 503)
)
async def retrieve_model(model_id: str, state: State) -> dict[str, Any]:
    """One model: the base, an adapter ("name") or one of its versions ("name@N"); else 404."""
    state.ready_engine()
    served = await state.resolve_model(model_id)
    if served is None:
        return _base_card(state)
    return _adapter_card(state, model_id, served.record)


def _base_card(state: ServerState) -> dict[str, Any]:
    engine = state.ready_engine()
    return {
        "id": state.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "kangaroo",
        "root": engine.model_path,
        "parent": None,
        "max_model_len": engine.max_model_len,
    }


def _adapter_card(state: ServerState, model_id: str, record: VersionRecord) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": record.created,
        "owned_by": "kangaroo",
        "root": f"{record.name}@{record.version}",
        "parent": state.model_id,
        "max_model_len": state.ready_engine().max_model_len,
        "version": record.version,
        "rank": record.rank,
        "eval_loss": record.eval_loss,
        "eval_accuracy": record.eval_accuracy,
    }
