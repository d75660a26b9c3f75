"""GET /v1/models and /v1/models/{id}: the served model in OpenAI's list format."""

from typing import Any

from fastapi import APIRouter

from server.state import ServerState, State

router = APIRouter()


@router.get("/v1/models")
async def list_models(state: State) -> dict[str, Any]:
    """The models this server serves."""
    return {"object": "list", "data": [_model_card(state)]}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, state: State) -> dict[str, Any]:
    """One served model, or 404 `model_not_found`."""
    state.check_model(model_id)
    return _model_card(state)


def _model_card(state: ServerState) -> dict[str, Any]:
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
