"""The EHR's discharge event: `POST /v1/events/discharges` scores a discharge's readmission risk.

Body `{"encounter_id": "<Encounter id>", "tenant_id": "default"}`, or the Encounter itself as a FHIR
subscription-style notification sends it (`{"resourceType": "Encounter", "id": ..., "status":
"finished", "hospitalization": {"dischargeDisposition": ...}}`: anything but a finished stay with a
discharge disposition is refused with 422) -> 202 `{"workflow_id": "readmission-<encounter id>",
"started": true}`; the same event again answers the same id with `"started": false`.  Callers
authenticate like the AI gateway's; the team needs the tenant's grant and the PHI permission.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from careflow import task_queues
from careflow.llm.teams import TENANT_PATTERN
from careflow.models.common import FHIR_ID
from careflow.models.readmission import DischargeSource
from careflow.security.logging import get_logger
from starters.api.common import ApiError, TeamId, body_of, chart_reader_tenant, temporal_of
from starters.clients.readmission import start_discharge

router = APIRouter()
log = get_logger(__name__)


class DischargeEvent(BaseModel):
    """`{"encounter_id": ...}`, or the Encounter resource itself (resourceType, id, status, ...)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    encounter_id: str | None = Field(None, pattern=FHIR_ID)
    tenant_id: str | None = Field(None, pattern=TENANT_PATTERN)  # default: the team's only tenant
    resource_type: str | None = Field(None, alias="resourceType")
    id: str | None = Field(None, pattern=FHIR_ID)
    status: str | None = None
    hospitalization: dict[str, Any] | None = None

    def encounter(self) -> str:
        """The discharged Encounter's id; 422 for an Encounter that is not a discharge."""
        if self.resource_type is None:
            if self.encounter_id is None:
                raise ApiError.invalid("encounter_id (or an Encounter resource)")
            return self.encounter_id
        if self.resource_type != "Encounter" or not self.id:
            raise ApiError(
                422, "invalid_request_error", f"expected an Encounter with an id, got {self.resource_type}"
            )
        if self.status != "finished":
            raise ApiError(
                422,
                "invalid_request_error",
                f"the Encounter is {self.status!r}, not 'finished': no discharge yet",
            )
        if not (self.hospitalization or {}).get("dischargeDisposition"):
            raise ApiError(
                422, "invalid_request_error", "the Encounter has no hospitalization.dischargeDisposition"
            )
        return self.id


@router.post("/v1/events/discharges")
async def discharge_event(request: Request, team_id: TeamId) -> Response:
    event = await body_of(request, DischargeEvent)
    event.encounter()  # the body's own faults before the caller's permissions
    tenant_id = await chart_reader_tenant(request, team_id, event.tenant_id, "a risk score")
    queue = getattr(request.app.state, "discharges_task_queue", task_queues.MAIN)
    started = await start_discharge(
        await temporal_of(request),
        event.encounter(),
        DischargeSource.FHIR,
        tenant_id=tenant_id,
        task_queue=queue,
    )
    log.info("discharge event", workflow_id=started.workflow_id, started=started.started, team_id=team_id)
    return JSONResponse({"workflow_id": started.workflow_id, "started": started.started}, status_code=202)
