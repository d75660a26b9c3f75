"""GET /metrics: the server's metrics in Prometheus' text format."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.api.openapi import responses
from server.state import State
from server.traffic.auth import require_admin

router = APIRouter()


@router.get("/metrics", response_class=Response, responses=responses(None, media_type="text/plain"))
async def metrics(request: Request, state: State) -> Response:
    """Every metric; needs an admin key unless `open_metrics`."""
    if not state.settings.open_metrics:
        require_admin(request)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
