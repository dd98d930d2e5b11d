"""The AI gateway: team checks, budget reservation, token rate limit, tier routing with fallback
behind per-provider circuit breakers, cost attribution.  Callers name a tier, never a model.

One call, in order: team + month ledger (one query) -> tier allowed? PHI allowed? -> downgrade to
Efficient at 90 % of the budget -> admit the token estimate into the team's 60 s window -> reserve
the worst-case cost -> primary, then fallback, each only while its breaker admits it -> settle the
actual cost and tokens -> record the call.  Refusals are typed (careflow.llm.errors).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg
from pydantic import BaseModel

from careflow.config import Settings
from careflow.finetune import deployment
from careflow.finetune.serving import served_model
from careflow.llm import structured, tasks
from careflow.llm.admission import admit_and_hold
from careflow.llm.breaker import BreakerSettings, CircuitBreaker, Permit
from careflow.llm.budget import BudgetLedger, BudgetSnapshot, Reservation
from careflow.llm.config import GatewayConfig, Target
from careflow.llm.cost import (
    CallRecord,
    GatewayMetrics,
    cost_of,
    estimate_prompt_tokens,
    quality_of,
    worst_case_cost,
)
from careflow.llm.errors import (
    BudgetExceeded,
    GatewayError,
    PhiNotPermitted,
    ProvidersUnavailable,
    RateLimited,
    StructuredOutputFailed,
    TierNotAllowed,
    UnknownTeam,
)
from careflow.llm.providers import build_providers
from careflow.llm.ratelimit import RateTicket, TokenRateLimiter
from careflow.llm.settlement import settle_and_record
from careflow.llm.types import (
    CompletionRequest,
    CompletionResponse,
    Evidence,
    Provider,
    ProviderError,
    Tier,
)
from careflow.security.logging import get_logger

log = get_logger(__name__)

_OUTCOMES: dict[type[GatewayError], str] = {
    UnknownTeam: "unknown_team",
    TierNotAllowed: "tier_not_allowed",
    PhiNotPermitted: "phi_refused",
    BudgetExceeded: "budget_exceeded",
    RateLimited: "rate_limited",
    ProvidersUnavailable: "providers_unavailable",
    StructuredOutputFailed: "invalid_output",
}
# When every provider failed without saying when to come back.
_DEFAULT_RETRY_AFTER_S = 5.0
# Tasks answered by a fine-tuned model that the caller's feature (its use case) deploys: the row in
# model_deployments decides per request which version answers (champion, a canary's stable share) and
# which answers beside it in shadow; no row, or no champion yet, and the tier route answers.
DEPLOYED_TASKS = {"note_draft": "note_model"}

Clock = Callable[[], datetime | None]


@dataclass
class _Call:
    """One provider call in progress: what admission holds, and what to settle it at."""

    rec: CallRecord
    ticket: RateTicket | None = None
    reservation: Reservation | None = None
    actual_usd: Decimal = Decimal(0)  # stays 0 when no provider answered: the hold is released
    actual_tokens: int = 0


@dataclass(frozen=True)
class Routed:
    response: CompletionResponse
    target: Target
    fallback_used: bool


class Gateway:
    def __init__(
        self,
        pool: asyncpg.Pool,
        providers: Mapping[str, Provider],
        config: GatewayConfig | None = None,
        *,
        metrics: GatewayMetrics | None = None,
        clock: Clock = lambda: None,  # None: the database's now(); tests inject fixed times
    ) -> None:
        self._pool = pool
        self.config = config or GatewayConfig()
        self.providers = dict(providers)
        self.routes = self.config.tier_routes()
        self.breaker = CircuitBreaker(
            pool,
            BreakerSettings(
                failures=self.config.breaker_failures,
                window_s=self.config.breaker_window_s,
                open_s=self.config.breaker_open_s,
                probe_ttl_s=self.config.breaker_probe_ttl_s,
            ),
        )
        self.ledger = BudgetLedger(pool, self.config.budget_alert_at, self.config.budget_downgrade_at)
        self.limiter = TokenRateLimiter(pool, self.config.rate_window_s)
        self.metrics = metrics or GatewayMetrics()
        self._clock = clock

    @classmethod
    def from_settings(cls, pool: asyncpg.Pool, settings: Settings) -> Gateway:
        """The process's gateway: configuration from CAREFLOW_GATEWAY_*, providers from settings."""
        config = GatewayConfig()
        return cls(pool, build_providers(settings, config), config)

    # -- raw completions ----------------------------------------------------------------------
    async def complete(
        self, team_id: str, use_case: str, tier: Tier, request: CompletionRequest, request_id: str
    ) -> CompletionResponse:
        response, _ = await self.complete_with_record(team_id, use_case, tier, request, request_id)
        return response

    async def complete_with_record(
        self, team_id: str, use_case: str, tier: Tier, request: CompletionRequest, request_id: str
    ) -> tuple[CompletionResponse, CallRecord]:
        rec = _new_record(team_id, use_case, tier, request, request_id)
        async with self._recorded(rec) as call:
            response = await self._call(call, Tier(tier), request)
            evidence_ids = [e.id for e in request.evidence]
            rec.citation_count, rec.disclaimer_present = quality_of(response, evidence_ids)
        return response, rec

    @asynccontextmanager
    async def _recorded(self, rec: CallRecord) -> AsyncIterator[_Call]:
        """Time the block, set the outcome from its refusal if any, then settle and record the call."""
        started = time.perf_counter()
        call = _Call(rec)
        try:
            yield call
        except GatewayError as exc:
            rec.outcome = _OUTCOMES.get(type(exc), "refused")
            raise
        except ProviderError as exc:
            rec.outcome = f"provider_{exc.kind}"
            raise
        except Exception:
            rec.outcome = "error"
            raise
        finally:
            rec.latency_ms = (time.perf_counter() - started) * 1000
            # Shielded: a cancelled caller must not leave money reserved.
            await asyncio.shield(self._finish(call))

    async def _call(
        self, call: _Call, tier: Tier, request: CompletionRequest, target: Target | None = None
    ) -> CompletionResponse:
        rec = call.rec
        routed = await self._admitted_call(call, tier, request, target)
        response, usage = routed.response, routed.response.usage
        rec.provider, rec.model = routed.target.provider, routed.target.model
        rec.prompt_tokens, rec.completion_tokens = usage.input_tokens, usage.output_tokens
        rec.cached_tokens = usage.cache_read_tokens
        rec.fallback_used = routed.fallback_used
        rec.finish_reason = response.finish_reason
        rec.response_chars = len(response.text)
        rec.cost_usd = cost_of(usage, self.config.price(routed.target.model))
        call.actual_usd, call.actual_tokens = rec.cost_usd, usage.input_tokens + usage.output_tokens
        return response

    async def _admitted_call(
        self, call: _Call, tier: Tier, request: CompletionRequest, target: Target | None = None
    ) -> Routed:
        rec, at = call.rec, self._clock()
        # Admission runs on one connection, released before the (long) provider call.
        async with self._pool.acquire() as conn:
            snap = await self.ledger.snapshot(rec.team_id, at, conn)
            team = snap.team
            if tier not in team.allowed_tiers:
                raise TierNotAllowed(team.team_id, tier.value, [t.value for t in team.allowed_tiers])
            if request.contains_phi and not team.phi_permitted:
                raise PhiNotPermitted(team.team_id, "the team is not permitted to send PHI")
            effective = await self._budget_tier(snap, tier, conn)
            rec.tier = effective.value
            targets = (
                self._eligible_targets(team.team_id, effective, request.contains_phi)
                if target is None
                else [target]  # a deployed model: its provider is self-hosted (PHI permitted)
            )

            prompt_estimate = estimate_prompt_tokens(request)
            prices = [self.config.price(t.model) for t in targets]
            estimate = worst_case_cost(prompt_estimate, request.max_tokens, prices)
            call.ticket, call.reservation = await admit_and_hold(
                conn, self.limiter, self.ledger, snap, prompt_estimate + request.max_tokens, estimate, at
            )
            first = targets[0].provider
            first_permit = (
                await self.breaker.acquire(first, at, conn)
                if first in snap.breaker_watch
                else Permit(first, probe=False, had_failures=False)  # closed, no recent failure
            )
        return await self._route(effective, targets, request, first_permit)

    async def _finish(self, call: _Call) -> None:
        """Settle the rate window and the reservation at the actual cost and record the call, in one
        statement; then the 80 % alert if this charge reached it."""
        self.metrics.observe(call.rec)
        try:
            async with self._pool.acquire() as conn:
                spend = await settle_and_record(
                    conn, call.rec, call.ticket, call.reservation, call.actual_usd, call.actual_tokens
                )
                if spend is not None:
                    await self.ledger.note_spend(spend, conn)
        except (OSError, asyncpg.PostgresError) as exc:
            # The answer stands; an unsettled hold only makes the budget stricter until it is fixed.
            log.error("llm call settlement failed", request_id=call.rec.request_id, error=type(exc).__name__)

    async def _budget_tier(self, snap: BudgetSnapshot, tier: Tier, conn: asyncpg.Connection) -> Tier:
        if tier is Tier.EFFICIENT or not self.ledger.should_downgrade(snap):
            return tier
        await self.ledger.note_downgrade(snap, conn)
        return Tier.EFFICIENT

    def _eligible_targets(self, team_id: str, tier: Tier, contains_phi: bool) -> list[Target]:
        route = self.routes.get(tier)
        targets = [t for t in (route.targets() if route else []) if t.provider in self.providers]
        if not targets:
            raise ProvidersUnavailable(tier.value, ["no provider configured"], _DEFAULT_RETRY_AFTER_S)
        if contains_phi:
            targets = [t for t in targets if self.providers[t.provider].phi_permitted]
            if not targets:
                raise PhiNotPermitted(team_id, f"no PHI-permitted provider serves tier {tier.value!r}")
        return targets

    # -- routing --------------------------------------------------------------------------------
    async def _route(
        self, tier: Tier, targets: list[Target], request: CompletionRequest, first_permit: Permit | None
    ) -> Routed:
        reasons: list[str] = []
        retry_after: float | None = None
        for index, target in enumerate(targets):
            failure: str
            provider = self.providers[target.provider]
            if index == 0:
                permit = first_permit  # checked during admission, on the same connection
            else:
                permit = await self.breaker.acquire(target.provider, self._clock())
            if permit is None:
                reasons.append(f"{target.provider}: breaker open")
                retry_after = min(retry_after or self.config.breaker_open_s, self.config.breaker_open_s)
                continue
            try:
                response = await asyncio.wait_for(
                    provider.complete(request, target.model), self.config.provider_timeout_s
                )
            except ProviderError as exc:
                if not exc.falls_back:
                    if permit.probe:  # it answered: the provider is up, the request was bad
                        await self.breaker.record_success(permit, self._clock())
                    raise
                failure = exc.kind
                if exc.retry_after is not None:
                    retry_after = min(retry_after or exc.retry_after, exc.retry_after)
            except TimeoutError:
                failure = "timeout"
            except (OSError, ValueError, RuntimeError) as exc:  # an unwrapped transport or decode error
                failure = f"error {type(exc).__name__}"
            else:
                await self.breaker.record_success(permit, self._clock())
                return Routed(response, target, fallback_used=index > 0)
            await self.breaker.record_failure(permit, self._clock())
            self.metrics.provider_failures.labels(target.provider, failure).inc()
            reasons.append(f"{target.provider}: {failure}")
            log.warning("llm provider failed", provider=target.provider, tier=tier.value, kind=failure)
        raise ProvidersUnavailable(tier.value, reasons, retry_after or _DEFAULT_RETRY_AFTER_S)

    # -- structured tasks ---------------------------------------------------------------------------
    async def run_task(
        self,
        team_id: str,
        use_case: str,
        tier: Tier,
        task_input: tasks.TaskInput,
        evidence: list[Evidence],
        request_id: str,
        contains_phi: bool | None = None,  # None: the task's own declaration
        pinned: Target | None = None,  # one of `serving`'s answers: that model and no fallback
    ) -> tuple[BaseModel, CallRecord]:
        """Build the task's request, call through routing, validate; one corrective retry, then
        StructuredOutputFailed.  The task is the input's type (careflow.llm.tasks.spec_for)."""
        spec = tasks.spec_for(task_input)
        task = spec.name
        request = spec.build_request(task_input, evidence, Tier(tier))
        if contains_phi is not None:
            request.contains_phi = contains_phi
        evidence_ids = {e.id for e in evidence}
        if pinned is not None and request.contains_phi and not self.providers[pinned.provider].phi_permitted:
            raise PhiNotPermitted(team_id, f"provider {pinned.provider!r} is not permitted PHI")
        routing = await self._deployed(task, use_case, request_id)
        target = pinned
        if routing and routing.serves:
            target = Target(provider=DEPLOYED_TASKS[task], model=served_model(routing.serves))
        error: structured.StructuredOutputError | None = None
        for attempt in range(2):
            call_id = request_id if attempt == 0 else f"{request_id}:retry"
            rec = _new_record(team_id, use_case, tier, request, call_id)
            parsed: BaseModel | None = None
            async with self._recorded(rec) as call:
                response = await self._call(call, Tier(tier), request, target)
                try:
                    parsed = structured.parse_output(task, response, evidence_ids)
                except structured.StructuredOutputError as exc:
                    error, rec.outcome = exc, "invalid_output"
                signals = structured.quality_signals(task, response, parsed)
                rec.citation_count = int(str(signals["citation_count"]))
                disclaimer = signals["disclaimer_present"]
                rec.disclaimer_present = None if disclaimer is None else bool(disclaimer)
            if parsed is not None:
                if routing and routing.shadow:
                    await self._shadow(DEPLOYED_TASKS[task], routing.shadow, rec, request)
                return parsed, rec
            assert error is not None
            log.info("llm output invalid", task=task, request_id=request_id, attempt=attempt + 1)
            request = structured.corrective_request(request, response, error)
        # The validation message names fields and ids only (never values), so it is safe to carry.
        raise StructuredOutputFailed(task, request_id, "; ".join(error.problems) if error else "invalid")

    def serving(self, task: str, team_id: str) -> Target:
        """The model that answers a task's requests now (its default tier's first target permitted its
        data): what a golden run scores, pinned, so a fallback's answer is never scored as the primary's."""
        spec = tasks.task_spec(task)
        return self._eligible_targets(team_id, spec.default_tier, spec.contains_phi)[0]

    async def _deployed(self, task: str, feature: str, request_id: str) -> deployment.Routing | None:
        """Which version answers this request of a deployed task (read each time: a rollback is a row
        update that the next request sees)."""
        if task not in DEPLOYED_TASKS:
            return None
        return deployment.route(await deployment.current(self._pool, feature), request_id)

    async def _shadow(
        self, provider: str, version: str, served: CallRecord, request: CompletionRequest
    ) -> None:
        """The candidate answers the same request beside the champion: recorded (outcome `shadow`, its own
        request id, so feedback on the answer served never lands on it), never returned, never able to
        fail the request; no budget or rate hold and no breaker: it is the platform's test, not the
        team's traffic."""
        rec = _new_record(served.team_id, served.use_case, Tier(served.requested_tier), request,
                          f"{served.request_id}:shadow")  # fmt: skip
        rec.tier, rec.provider, rec.model = served.tier, provider, served_model(version)
        try:
            async with self._recorded(rec):
                started = time.perf_counter()
                response = await asyncio.wait_for(
                    self.providers[provider].complete(request, rec.model), self.config.provider_timeout_s
                )
                rec.prompt_tokens, rec.completion_tokens = (
                    response.usage.input_tokens,
                    response.usage.output_tokens,
                )
                rec.finish_reason, rec.response_chars = response.finish_reason, len(response.text)
                rec.outcome = "shadow"
                log.info("shadow answer", model=rec.model, ms=round((time.perf_counter() - started) * 1000))
        except Exception as exc:  # a shadow never fails the request it shadows
            log.warning("shadow answer failed", model=rec.model, error=type(exc).__name__)


def _new_record(
    team_id: str, use_case: str, tier: Tier, request: CompletionRequest, request_id: str
) -> CallRecord:
    return CallRecord(
        request_id=request_id,
        team_id=team_id,
        use_case=use_case,
        requested_tier=Tier(tier).value,
        tier=Tier(tier).value,
        contains_phi=request.contains_phi,
    )
