"""The EHR's order-entry event: `POST /v1/events/orders` starts prior authorization for an order.

Body `{"order_id": "ord-7-3-semaglutide", "priority": "standard"|"expedited", "tenant_id": "default"}`
-> 202 `{"workflow_id": "prior-auth-<order id>", "started": true}`; the same event again answers the
same workflow id with `"started": false` (starters/clients/prior_auth.py).  Callers authenticate like the AI
gateway's (a team token as `x-api-key` or `Authorization: Bearer`, from `careflow teams token`); the
team needs the tenant's grant (`--kb-tenants`) and the PHI permission (`--phi`), else 403.  Errors
have the gateway's shape: `{"type": "error", "error": {"type": ..., "message": ...}}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from careflow import task_queues
from careflow.llm.teams import TENANT_PATTERN
from careflow.models.prior_auth import Priority
from careflow.security.logging import get_logger
from starters.api.common import TeamId, body_of, chart_reader_tenant, temporal_of
from starters.clients.prior_auth import ORDER_ID_RE, start_prior_auth

router = APIRouter()
log = get_logger(__name__)


class OrderEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str = Field(pattern=ORDER_ID_RE.pattern)
    priority: Priority = Priority.STANDARD
    tenant_id: str | None = Field(None, pattern=TENANT_PATTERN)  # default: the team's only tenant


@router.post("/v1/events/orders")
async def order_event(request: Request, team_id: TeamId) -> Response:
    event = await body_of(request, OrderEvent)
    # A prior auth reads the patient's chart and drafts from it: the team needs the tenant's grant
    # and the PHI permission, as a knowledge-base query needs the grant.
    tenant_id = await chart_reader_tenant(request, team_id, event.tenant_id, "a prior auth")
    queue = getattr(request.app.state, "orders_task_queue", task_queues.MAIN)
    started = await start_prior_auth(
        await temporal_of(request),
        event.order_id,
        priority=event.priority,
        tenant_id=tenant_id,
        task_queue=queue,
    )
    log.info("order event", workflow_id=started.workflow_id, started=started.started, team_id=team_id)
    return JSONResponse({"workflow_id": started.workflow_id, "started": started.started}, status_code=202)
