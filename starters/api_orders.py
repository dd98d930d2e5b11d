"""The EHR's order-entry event: `POST /v1/events/orders` starts prior authorization for an order.

Body `{"order_id": "ord-7-3-semaglutide", "priority": "standard"|"expedited", "tenant_id": "default"}`
-> 202 `{"workflow_id": "prior-auth-<order id>", "started": true}`; the same event again answers the
same workflow id with `"started": false` (starters/pa_orders.py).  Callers authenticate like the AI
gateway's (a team token as `x-api-key` or `Authorization: Bearer`, from `careflow teams token`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.client import Client

from careflow import task_queues
from careflow.config import Settings
from careflow.security.logging import get_logger
from careflow.security.temporal import connect
from careflow.validation import error_fields
from starters.api_gateway import gateway_of, team_of
from starters.pa_orders import ORDER_ID_RE, Priority, start_prior_auth

router = APIRouter()
log = get_logger(__name__)


class OrderEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str = Field(pattern=ORDER_ID_RE.pattern)
    priority: Priority = "standard"
    tenant_id: str = Field("default", pattern=r"^[A-Za-z0-9._-]{1,64}$")


async def _temporal(request: Request) -> Client:
    """One Temporal client per API process, connected on first use."""
    state = request.app.state
    client: Client | None = getattr(state, "temporal_client", None)
    if client is None:
        client = await connect(Settings(), identity="careflow-api-orders")
        state.temporal_client = client
    return client


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@router.post("/v1/events/orders")
async def order_event(request: Request) -> JSONResponse:
    team_id = team_of(request, gateway_of(request))
    if team_id is None:
        return _error(401, "invalid or missing team token")
    try:
        event = OrderEvent.model_validate(await request.json())
    except (ValidationError, ValueError) as exc:
        # Field names only: the values may not be what they claim to be.
        where = error_fields(exc) if isinstance(exc, ValidationError) else "body"
        return _error(400, f"invalid order event: {where}")
    queue = getattr(request.app.state, "orders_task_queue", task_queues.MAIN)
    started = await start_prior_auth(
        await _temporal(request),
        event.order_id,
        priority=event.priority,
        tenant_id=event.tenant_id,
        task_queue=queue,
    )
    log.info("order event", workflow_id=started.workflow_id, started=started.started, team_id=team_id)
    return JSONResponse({"workflow_id": started.workflow_id, "started": started.started}, status_code=202)
