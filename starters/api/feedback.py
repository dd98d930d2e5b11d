"""`POST /v1/feedback`: a team's thumbs up or down, or a flag, on one of its AI responses (the
`request-id` of `POST /v1/messages`).  201 when recorded (again: the last word wins), 404 for a
response the team does not have, 400 naming the invalid field."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from careflow.observe import feedback
from starters.api.common import ApiError, TeamId, body_of

router = APIRouter()


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,80}$")
    rating: feedback.Rating | None = None
    flag: StrictBool = False
    reason: feedback.Reason | None = None  # a category: free text could carry PHI


@router.post("/v1/feedback")
async def post_feedback(request: Request, team_id: TeamId) -> JSONResponse:
    body = await body_of(request, FeedbackBody)
    if body.rating is None and not body.flag:
        raise ApiError.invalid("rating or flag (a rating 'up' or 'down', or flag: true)")
    found = await feedback.record(
        request.app.state.pool, team_id, body.response_id, body.rating, body.flag, body.reason
    )
    if not found:
        raise ApiError(404, "not_found_error", f"no response {body.response_id} of team {team_id}")
    out: dict[str, Any] = {"response_id": body.response_id, "rating": body.rating, "flag": body.flag}
    return JSONResponse(out, status_code=201)
