"""The EHR's order-entry event: `POST /v1/events/orders` starts prior authorization for an order.

Body `{"order_id": "ord-7-3-semaglutide", "priority": "standard"|"expedited", "tenant_id": "default"}`
-> 202 `{"workflow_id": "prior-auth-<order id>", "started": true}`; the same event again answers the
same workflow id with `"started": false` (starters/pa_orders.py).  Callers authenticate like the AI
gateway's (a team token as `x-api-key` or `Authorization: Bearer`, from `careflow teams token`); the
team needs the tenant's grant (`--kb-tenants`) and the PHI permission (`--phi`), else 403.  Errors
have the gateway's shape: `{"type": "error", "error": {"type": ..., "message": ...}}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client

from careflow import task_queues
from careflow.config import Settings
from careflow.llm.errors import GatewayError
from careflow.llm.teams import TENANT_PATTERN, TeamStore
from careflow.security.logging import get_logger
from careflow.security.temporal import connect
from starters.api_gateway import error_response, refusal_response, team_and_body
from starters.pa_orders import ORDER_ID_RE, Priority, start_prior_auth

router = APIRouter()
log = get_logger(__name__)


class OrderEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str = Field(pattern=ORDER_ID_RE.pattern)
    priority: Priority = "standard"
    tenant_id: str | None = Field(None, pattern=TENANT_PATTERN)  # default: the team's only tenant


async def _temporal(request: Request) -> Client:
    """One Temporal client per API process, connected on first use."""
    state = request.app.state
    client: Client | None = getattr(state, "temporal_client", None)
    if client is None:
        client = await connect(Settings(), identity="careflow-api-orders")
        state.temporal_client = client
    return client


@router.post("/v1/events/orders")
async def order_event(request: Request) -> Response:
    checked = await team_and_body(request, OrderEvent)
    if isinstance(checked, JSONResponse):
        return checked
    team_id, event = checked
    try:
        team = await TeamStore(request.app.state.pool).get(team_id)
    except GatewayError as exc:
        return refusal_response(exc)
    # A prior auth reads the patient's chart and drafts from it: the team needs the tenant's grant
    # and the PHI permission, as a knowledge-base query needs the grant.
    tenant_id = event.tenant_id or (team.kb_tenants[0] if len(team.kb_tenants) == 1 else None)
    if tenant_id is None:
        return error_response(
            400, "invalid_request_error", "invalid request: tenant_id (the team has several)"
        )
    if tenant_id not in team.kb_tenants:
        return error_response(
            403, "permission_error", f"team {team_id!r} may not start work in tenant {tenant_id!r}"
        )
    if not team.phi_permitted:
        return error_response(
            403, "permission_error", f"team {team_id!r} is not permitted PHI; a prior auth reads the chart"
        )
    queue = getattr(request.app.state, "orders_task_queue", task_queues.MAIN)
    started = await start_prior_auth(
        await _temporal(request),
        event.order_id,
        priority=event.priority,
        tenant_id=tenant_id,
        task_queue=queue,
    )
    log.info("order event", workflow_id=started.workflow_id, started=started.started, team_id=team_id)
    return JSONResponse({"workflow_id": started.workflow_id, "started": started.started}, status_code=202)
