"""What every careflow API route uses, one way each: the settings `create_app` was given, the error
shape (Anthropic's error JSON: `{"type": "error", "error": {"type": ..., "message": ...}}`), team
authentication (a team token as `x-api-key` or `Authorization: Bearer`, from `careflow teams token`),
the team's tenant grant, a validated body, and the per-process gateway and Temporal client.

A route raises `ApiError` (or lets `authenticated_team` / `body_of` raise it); `create_app` renders it.
FHIR routes answer with an OperationOutcome instead (careflow/fhir/outcome.py).
"""

from __future__ import annotations

import math
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from careflow.config import Settings
from careflow.llm.errors import (
    BudgetExceeded,
    GatewayError,
    PhiNotPermitted,
    ProvidersUnavailable,
    RateLimited,
    TierNotAllowed,
    UnknownTeam,
)
from careflow.llm.gateway import Gateway
from careflow.llm.teams import Team, TeamStore, team_from_token
from careflow.llm.types import ProviderError
from careflow.security.temporal import connect
from careflow.validation import error_fields

Body = TypeVar("Body", bound=BaseModel)


class ApiError(Exception):
    """An answer in the API's error shape; never a 5xx for bad input."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.kind, self.message, self.headers)

    @classmethod
    def invalid(cls, what: str) -> ApiError:
        return cls(400, "invalid_request_error", f"invalid request: {what}")

    @classmethod
    def forbidden(cls, message: str) -> ApiError:
        return cls(403, "permission_error", message)


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def refusal(exc: GatewayError | ProviderError) -> ApiError:
    """The gateway's refusals, as the status codes Anthropic's API uses for them."""
    if isinstance(exc, RateLimited | ProvidersUnavailable):
        retry = {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
        if isinstance(exc, RateLimited):
            return ApiError(429, "rate_limit_error", str(exc), retry)
        return ApiError(529, "overloaded_error", str(exc), retry)
    if isinstance(exc, BudgetExceeded):
        return ApiError(402, "billing_error", str(exc))
    if isinstance(exc, TierNotAllowed | PhiNotPermitted | UnknownTeam):
        return ApiError.forbidden(str(exc))
    if isinstance(exc, ProviderError) and exc.kind == "bad_request":
        return ApiError.invalid(str(exc).removeprefix("invalid request: "))
    return ApiError(502, "api_error", str(exc))


# -- per-process state ----------------------------------------------------------------------------
def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def gateway_of(request: Request) -> Gateway:
    """One gateway per API process, built on first use from the app's pool."""
    state = request.app.state
    gateway: Gateway | None = getattr(state, "llm_gateway", None)
    if gateway is None:
        gateway = Gateway.from_settings(state.pool, settings_of(request))
        state.llm_gateway = gateway
    return gateway


async def temporal_of(request: Request) -> Client:
    """One Temporal client per API process, connected on first use."""
    state = request.app.state
    client: Client | None = getattr(state, "temporal_client", None)
    if client is None:
        client = await connect(settings_of(request), identity="careflow-api")
        state.temporal_client = client
    return client


# -- authentication and grants --------------------------------------------------------------------
def authenticated_team(request: Request) -> str:
    """The team id in the request's token; 401 when there is none or it does not verify."""
    state = request.app.state
    secret: str | None = getattr(state, "llm_gateway_secret", None)
    if secret is None:
        secret = gateway_of(request).config.signing_secret(settings_of(request))
        state.llm_gateway_secret = secret
    token = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    team_id = team_from_token(secret, token) if token else None
    if team_id is None:
        raise ApiError(401, "authentication_error", "invalid or missing team token")
    return team_id


TeamId = Annotated[str, Depends(authenticated_team)]


async def body_of(request: Request, model: type[Body]) -> Body:
    """The validated JSON body; 400 names the invalid fields, never echoing their values."""
    try:
        return model.model_validate(await request.json())
    except (ValidationError, ValueError) as exc:
        where = error_fields(exc) if isinstance(exc, ValidationError) else "body must be JSON"
        raise ApiError.invalid(where) from None


async def chart_reader_tenant(request: Request, team_id: str, asked: str | None, reads: str) -> str:
    """For work that reads a patient's chart: the team's tenant (`granted_tenant`, to start work), and
    403 unless the team is permitted PHI; `reads` says what reads the chart ("a prior auth")."""
    try:
        team = await TeamStore(request.app.state.pool).get(team_id)
    except GatewayError as exc:
        raise refusal(exc) from None
    tenant_id = granted_tenant(team, asked, "start work")
    if not team.phi_permitted:
        raise ApiError.forbidden(f"team {team_id!r} is not permitted PHI; {reads} reads the chart")
    return tenant_id


def granted_tenant(team: Team, asked: str | None, doing: str) -> str:
    """The tenant asked for (else the team's only one), if the team holds its grant; 400 / 403 if not."""
    tenant_id = asked if asked is not None else (team.kb_tenants[0] if len(team.kb_tenants) == 1 else None)
    if tenant_id is None:
        raise ApiError.invalid("tenant_id (the team holds grants to several tenants)")
    if tenant_id not in team.kb_tenants:
        raise ApiError.forbidden(f"team {team.team_id!r} may not {doing} in tenant {tenant_id!r}")
    return tenant_id
