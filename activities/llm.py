"""The LLM activity: a structured task drafted through the AI gateway (tier routing, budgets, rate
limit, breaker, cost attribution).  The gateway is built once per worker process.

Workflows call `LlmActivities.draft` with `retry_rules.llm_draft(tier, attempts).options()`: a longer
timeout for Frontier, retries for transient refusals (rate limit, providers down) at the delay the
gateway asks for, and no retry for what another attempt cannot fix (bad input, PHI refusal, tier not
allowed, budget block).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from pydantic import BaseModel, Field, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.llm import tasks
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
from careflow.llm.types import Evidence, ProviderError, Tier
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType
from careflow.validation import error_fields


class DraftInput(BaseModel):
    """Build it with `DraftInput.of(typed task input, ...)`: the task's name and input travel as JSON."""

    team_id: str
    use_case: str  # cost attribution: "prior-auth", "lab-alert", ...
    tier: Tier
    task: str  # the task's wire name (careflow.llm.tasks), set by `of` from the input's type
    task_input: dict[str, Any]
    evidence: list[Evidence] = Field(default_factory=list)
    request_id: str  # from the workflow id and step, never the run id
    contains_phi: bool | None = None  # None: the task's own declaration
    patient_id: str | None = None  # whose data the call carries: the audit trail's subject

    @classmethod
    def of(cls, task_input: tasks.TaskInput, **fields: Any) -> DraftInput:
        task = tasks.spec_for(task_input).name
        return cls(task=task, task_input=task_input.model_dump(mode="json"), **fields)

    def typed_input(self) -> tasks.TaskInput:
        """The task input as its own type (KeyError for an unknown task, ValidationError for bad input)."""
        parsed: tasks.TaskInput = tasks.task_spec(self.task).input_model.model_validate(self.task_input)
        return parsed


class DraftOutput(BaseModel):
    task: str
    output: dict[str, Any]  # the validated task output (the task's output model as JSON)
    request_id: str
    provider: str | None = None
    model: str | None = None
    requested_tier: Tier
    tier: Tier  # may be Efficient after a budget downgrade
    fallback_used: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0


# What another attempt cannot fix: raised non-retryable (workflows/retry_rules.py lists the types).
NOT_RETRYABLE_REFUSALS: dict[type[GatewayError], str] = {
    PhiNotPermitted: "PhiNotPermitted",
    TierNotAllowed: "TierNotAllowed",
    BudgetExceeded: "BudgetExceeded",
    UnknownTeam: "UnknownTeam",
}


def to_application_error(exc: Exception) -> ApplicationError:
    """Gateway refusals as Temporal errors; messages carry ids and numbers only."""
    if isinstance(exc, RateLimited | ProvidersUnavailable):
        # Temporal waits as long as the gateway asks instead of failing the workflow.
        return ApplicationError(
            str(exc), type=type(exc).__name__, next_retry_delay=timedelta(seconds=exc.retry_after)
        )
    for refusal, name in NOT_RETRYABLE_REFUSALS.items():
        if isinstance(exc, refusal):
            return ApplicationError(str(exc), type=name, non_retryable=True)
    if isinstance(exc, ValidationError | KeyError):
        # pydantic's message would quote the input: name the fields only.
        where = error_fields(exc) if isinstance(exc, ValidationError) else str(exc)
        return ApplicationError(f"invalid task input: {where}", type="BadLlmInput", non_retryable=True)
    if isinstance(exc, ProviderError) and not exc.falls_back:
        return ApplicationError(str(exc), type="ProviderRejected", non_retryable=True)
    return ApplicationError(str(exc), type=type(exc).__name__)


class LlmActivities:
    """Built once per worker process; the gateway (provider clients included) on first use."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings | None = None,
        gateway: Gateway | None = None,
        actor: str = "careflow-worker",
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._gateway = gateway
        self._audit = PostgresAuditTrail(pool)
        self._actor = actor

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = Gateway.from_settings(self._pool, self._settings or Settings())
        return self._gateway

    @activity.defn(name="llm.draft")
    async def draft(self, inp: DraftInput) -> DraftOutput:
        attempt = activity.info().attempt
        request_id = inp.request_id if attempt == 1 else f"{inp.request_id}#attempt{attempt}"
        try:
            parsed, rec = await self.gateway.run_task(
                inp.team_id,
                inp.use_case,
                inp.tier,
                inp.typed_input(),
                inp.evidence,
                request_id,
                inp.contains_phi,
            )
        except (GatewayError, ProviderError, ValidationError, KeyError) as exc:
            raise to_application_error(exc) from None
        if rec.contains_phi:  # an inference over PHI is an audited access, in every pipeline
            await self._audit.record(
                AuditEvent(
                    event_type=AuditEventType.AI_INFERENCE,
                    actor=self._actor,
                    action=AuditAction.EXECUTE,
                    patient_id=inp.patient_id,
                    request_id=request_id,
                    workflow_id=activity.info().workflow_id,
                    detail={
                        "task": inp.task,
                        "use_case": inp.use_case,
                        "engine": f"{rec.provider}/{rec.model}",
                    },
                )
            )
        return DraftOutput(
            task=inp.task,
            output=parsed.model_dump(mode="json"),
            request_id=request_id,
            provider=rec.provider,
            model=rec.model,
            requested_tier=inp.tier,
            tier=Tier(rec.tier),
            fallback_used=rec.fallback_used,
            prompt_tokens=rec.prompt_tokens,
            completion_tokens=rec.completion_tokens,
            cost_usd=rec.cost_usd,
            latency_ms=rec.latency_ms,
        )
