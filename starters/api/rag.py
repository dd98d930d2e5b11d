"""`POST /v1/rag/query`: clinical knowledge questions answered from the knowledge base with citations.

Authentication and rate limiting are the AI gateway's (starters/api/common.py): a team token as
`x-api-key` or `Authorization: Bearer`; every query is admitted into the team's token window (cache hits
included, which never reach a model), and a cache miss bills its LLM call to the team.  Errors use the
gateway's error JSON: 400 bad request, 401 bad token, 403 a tenant the team may not query (`careflow teams
set TEAM --kb-tenants ...`), 404 no knowledge-base source answers the question
(no citations, never an uncited answer), 503 the model failed and no cached answer agrees.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from careflow.kb.rag import MAX_QUESTION_CHARS, AnswerUnavailable, NoEvidence, RagService
from careflow.llm.errors import GatewayError
from careflow.llm.teams import TENANT_PATTERN, TeamStore
from starters.api.common import ApiError, TeamId, body_of, gateway_of, granted_tenant, refusal

router = APIRouter()


class RagQueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    tenant_id: str | None = Field(None, pattern=TENANT_PATTERN)  # None: the team's only tenant
    patient_context: bool = False


def _service(request: Request) -> RagService:
    state = request.app.state
    service: RagService | None = getattr(state, "rag_service", None)
    if service is None:
        service = RagService(state.pool, gateway_of(request))
        state.rag_service = service
    return service


def _query_tokens(question: str) -> int:
    return math.ceil(len(question) / 4) + 1  # the rate window's cost of a query, hit or miss


@router.post("/v1/rag/query")
async def rag_query(request: Request, team_id: TeamId) -> Response:
    body = await body_of(request, RagQueryBody)
    gateway = gateway_of(request)
    service = _service(request)
    try:
        team = await TeamStore(service.pool).get(team_id)
        tenant_id = granted_tenant(team, body.tenant_id, "query the knowledge base")
        await gateway.limiter.admit(team_id, team.tokens_per_minute, _query_tokens(body.question))
        result = await service.answer(
            body.question,
            tenant_id,
            patient_context=body.patient_context,
            team_id=team_id,
            actor=f"team:{team_id}",
        )
    except GatewayError as exc:
        raise refusal(exc) from None
    except NoEvidence as exc:
        raise ApiError(404, "not_found_error", str(exc)) from None
    except ValueError as exc:
        raise ApiError(400, "invalid_request_error", str(exc)) from None
    except AnswerUnavailable as exc:
        raise ApiError(503, "overloaded_error", str(exc), {"retry-after": "5"}) from None
    return JSONResponse(result.model_dump(mode="json"), headers={"request-id": result.request_id})
