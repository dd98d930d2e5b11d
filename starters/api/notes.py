"""`POST /v1/notes/draft`: a SOAP note drafted from an encounter's context by the note model the
feature deploys (seed P9): its champion, a canary's stable share of requests, or, with no fine-tuned
version yet, the gateway's tier route.  The answer's `id` is what `POST /v1/feedback` takes: the flags
on it are what the canary gate of the promotion saga reads.

Authentication, rate limit and budget are the AI gateway's (a team token; PHI-permitted teams only, as
the context is PHI-adjacent).  Body: `{"age": 67, "sex": "female", "conditions": ["Essential
hypertension"], "medications": ["amlodipine"], "visit": "follow-up", "feature": "note_draft",
"request_id": "<optional: the client's own id, so a retry lands on the same version>"}`.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from careflow.llm.errors import GatewayError
from careflow.llm.tasks import NoteDraft, NoteDraftInput
from careflow.llm.types import ProviderError, Tier
from careflow.models.model_promotion import NOTE_DRAFT
from starters.api.common import TeamId, body_of, gateway_of, refusal

router = APIRouter()


class NoteDraftBody(NoteDraftInput):
    feature: str = Field(NOTE_DRAFT, pattern=r"^note_draft(\.[a-z0-9][a-z0-9_-]{0,31})?$")
    request_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._:-]{8,80}$")


@router.post("/v1/notes/draft")
async def draft_note(request: Request, team_id: TeamId) -> Response:
    body = await body_of(request, NoteDraftBody)
    request_id = body.request_id or f"note_{uuid.uuid4().hex}"
    context = NoteDraftInput.model_validate(body.model_dump(exclude={"feature", "request_id"}))
    try:
        parsed, rec = await gateway_of(request).run_task(
            team_id, body.feature, Tier.STANDARD, context, [], request_id
        )
    except (GatewayError, ProviderError) as exc:
        raise refusal(exc) from None
    assert isinstance(parsed, NoteDraft)
    out = {
        "id": request_id,
        "note": parsed.note,
        "missing_information": parsed.missing_information,
        "model": rec.model,
    }
    return JSONResponse(out, headers={"request-id": request_id})
