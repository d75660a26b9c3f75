"""GET /v1/usage: requests and tokens per key, model and mode (live or batch) (admin), from the
usage store."""

import asyncio
import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from server.api.openapi import UsageReport, responses
from server.errors import InvalidRequestError
from server.state import State
from server.traffic.auth import require_admin
from server.traffic.usage import GROUPS

router = APIRouter(dependencies=[Depends(require_admin)])


@router.get("/v1/usage", response_model=None, responses=responses(UsageReport, 400))
async def usage(
    state: State,
    group_by: Annotated[
        str, Query(description="Comma list of day, key_id, model, mode (live or batch).")
    ] = "key_id,model,mode",
    start: Annotated[datetime.date | None, Query(description="First day (UTC), inclusive.")] = None,
    end: Annotated[datetime.date | None, Query(description="Last day (UTC), inclusive.")] = None,
) -> dict[str, Any]:
    """Totals since the store began (or over start..end), grouped as asked."""
    groups = tuple(g.strip() for g in group_by.split(",") if g.strip())
    if unknown := [g for g in groups if g not in GROUPS]:
        raise InvalidRequestError(
            f"Invalid value for 'group_by': '{unknown[0]}'. Use any of {', '.join(GROUPS)}.",
            "group_by",
        )
    rows = await asyncio.to_thread(state.traffic.usage.report, groups, start, end)
    return {"object": "list", "group_by": list(groups), "start": start, "end": end, "data": rows}
