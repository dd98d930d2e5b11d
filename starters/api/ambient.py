"""An encounter's badge audio: `POST /v1/encounters/{encounter_id}/audio` drafts its SOAP note.

The body is the recording itself (WAV, FLAC or OGG; `Content-Type: audio/wav|audio/flac|audio/ogg`),
streamed into careflow's PHI store encrypted as it arrives (never whole in memory), up to
CAREFLOW_API_MAX_AUDIO_BYTES.  Query: `specialty` (primary-care, cardiology, orthopedics, emergency),
`physician_id` (the badge owner; default the encounter's attender), `consent_recorded_by` (the
patient's consent was asked by this practitioner and granted: recorded before anything is processed;
without it the workflow waits for `careflow ambient consent`).  -> 202 `{"workflow_id":
"ambient-note-<encounter id>", "started": true}`; a re-upload of the same encounter attaches
(`"started": false`).  Not audio: 415; too large: 413; bad parameters: 400.  Callers authenticate like
the AI gateway's; the team needs the tenant's grant and the PHI permission.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from careflow import task_queues
from careflow.llm.teams import TENANT_PATTERN
from careflow.models.ambient import Consent, NoteSource, Specialty
from careflow.models.common import FHIR_ID
from careflow.phi_store import PhiStore, TooLarge
from careflow.security.logging import get_logger
from starters.api.common import ApiError, TeamId, chart_reader_tenant, settings_of, temporal_of
from starters.clients.ambient import store_audio, submit

router = APIRouter()
log = get_logger(__name__)


@router.post("/v1/encounters/{encounter_id}/audio")
async def encounter_audio(
    request: Request,
    team_id: TeamId,
    encounter_id: str,
    specialty: str = Specialty.PRIMARY_CARE.value,
    physician_id: str | None = None,
    consent_recorded_by: str | None = None,
    tenant_id: str | None = None,
) -> Response:
    if not re.match(FHIR_ID, encounter_id):
        raise ApiError.invalid("encounter_id (a FHIR id: letters, digits, '-', '.')")
    if specialty not in {s.value for s in Specialty}:
        raise ApiError.invalid(f"specialty (one of {', '.join(s.value for s in Specialty)})")
    for name, value in (("physician_id", physician_id), ("consent_recorded_by", consent_recorded_by)):
        if value is not None and not re.match(FHIR_ID, value):
            raise ApiError.invalid(f"{name} (a FHIR id)")
    if tenant_id is not None and not re.match(TENANT_PATTERN, tenant_id):
        raise ApiError.invalid("tenant_id")
    tenant = await chart_reader_tenant(request, team_id, tenant_id, "an ambient note")
    settings = settings_of(request)
    phi = getattr(request.app.state, "phi_store", None) or PhiStore.of(settings)
    request.app.state.phi_store = phi
    try:
        stored, kind = await store_audio(phi, request.stream(), settings.api_max_audio_bytes)
    except TooLarge:
        raise ApiError(
            413, "request_too_large", f"the audio exceeds {settings.api_max_audio_bytes} bytes"
        ) from None
    if kind is None:
        raise ApiError(415, "invalid_request_error", "the body is not WAV, FLAC or OGG audio")
    consent = Consent(granted=True, recorded_by=consent_recorded_by) if consent_recorded_by else None
    started = await submit(
        await temporal_of(request),
        encounter_id,
        NoteSource.AUDIO,
        stored.ref,
        specialty=Specialty(specialty),
        consent=consent,
        physician_id=physician_id,
        tenant_id=tenant,
        task_queue=getattr(request.app.state, "ambient_task_queue", task_queues.MAIN),
        stt_queue=getattr(request.app.state, "ambient_stt_queue", task_queues.STT),
    )
    log.info(
        "encounter audio",
        workflow_id=started.workflow_id,
        started=started.started,
        bytes=stored.size,
        format=kind,
    )
    return JSONResponse({"workflow_id": started.workflow_id, "started": started.started}, status_code=202)
