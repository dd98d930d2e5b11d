"""Cost attribution: price a call, record it (table llm_calls), report per team, export metrics.

Every gateway call is recorded, refused and failed ones too, with token counts, cost, latency and
quality signals; never prompt or completion text.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel

from careflow.llm.config import Price
from careflow.llm.types import CompletionRequest, CompletionResponse, Usage

_MILLION = Decimal(1_000_000)
# Characters per token is about 4 for English; 3 over-estimates on purpose (reservations must cover).
_CHARS_PER_TOKEN = 3
_PER_MESSAGE_OVERHEAD = 8


def estimate_prompt_tokens(request: CompletionRequest) -> int:
    chars = len(request.system) + sum(len(m.content) for m in request.messages)
    chars += sum(len(e.text) + len(e.title) + len(e.id) for e in request.evidence)
    overhead = _PER_MESSAGE_OVERHEAD * (len(request.messages) + len(request.evidence) + 1)
    return math.ceil(chars / _CHARS_PER_TOKEN) + overhead


def cost_of(usage: Usage, price: Price) -> Decimal:
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    )
    return (total / _MILLION).quantize(Decimal("0.000001"))


def worst_case_cost(prompt_tokens: int, max_tokens: int, prices: list[Price]) -> Decimal:
    """What a call may cost at most on any of the tier's models (uncached prompt, full max_tokens)."""
    usage = Usage(input_tokens=prompt_tokens, output_tokens=max_tokens)
    return max(cost_of(usage, p) for p in prices)


_DISCLAIMER = re.compile(
    r"\b(ai[- ]generated|not (?:a substitute for|medical advice)|requires? (?:clinician|physician) review|"
    r"draft for review)\b",
    re.IGNORECASE,
)


def quality_of(response: CompletionResponse, evidence_ids: list[str]) -> tuple[int, bool]:
    """(citations: evidence ids the text names, disclaimer present)."""
    citations = sum(1 for eid in set(evidence_ids) if eid and eid in response.text)
    return citations, bool(_DISCLAIMER.search(response.text))


class CallRecord(BaseModel):
    request_id: str
    team_id: str
    use_case: str
    requested_tier: str
    tier: str
    provider: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms: float = 0.0
    outcome: str = "ok"  # ok | rate_limited | budget_exceeded | tier_not_allowed | phi_refused | ...
    fallback_used: bool = False
    contains_phi: bool = False
    finish_reason: str | None = None
    citation_count: int | None = None
    disclaimer_present: bool | None = None
    response_chars: int | None = None


# The llm_calls columns, in the order careflow.llm.settlement inserts them.
CALL_FIELDS = list(CallRecord.model_fields)


@dataclass(frozen=True)
class TeamCost:
    team_id: str
    calls: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: Decimal
    budget_usd: Decimal | None

    @property
    def budget_used(self) -> float | None:
        if not self.budget_usd:
            return None
        return float(self.cost_usd / self.budget_usd)


async def cost_report(pool: asyncpg.Pool, month: date) -> list[TeamCost]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT c.team_id, count(*) AS calls, count(*) FILTER (WHERE c.outcome <> 'ok') AS failed,
                      sum(c.prompt_tokens) AS prompt, sum(c.completion_tokens) AS completion,
                      sum(c.cached_tokens) AS cached, sum(c.cost_usd) AS cost, t.monthly_budget_usd
                 FROM llm_calls c LEFT JOIN teams t ON t.team_id = c.team_id
                WHERE c.created_at >= $1 AND c.created_at < ($1::date + interval '1 month')
                GROUP BY c.team_id, t.monthly_budget_usd
                ORDER BY cost DESC, c.team_id""",
            month,
        )
    return [
        TeamCost(
            r["team_id"],
            r["calls"],
            r["failed"],
            int(r["prompt"]),
            int(r["completion"]),
            int(r["cached"]),
            r["cost"],
            r["monthly_budget_usd"],
        )
        for r in rows
    ]


def write_csv(rows: list[TeamCost], month: date, path: Path) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "month",
                "team_id",
                "calls",
                "failed",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cost_usd",
                "budget_usd",
            ]
        )
        for r in rows:
            w.writerow(
                [
                    month.strftime("%Y-%m"),
                    r.team_id,
                    r.calls,
                    r.failed,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cached_tokens,
                    f"{r.cost_usd:.6f}",
                    "" if r.budget_usd is None else f"{r.budget_usd:.2f}",
                ]
            )


BREAKER_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    """Prometheus metrics of one gateway, on its own registry (served by /v1/gateway/metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "careflow_gateway_request_seconds",
            "Gateway call latency, provider call included",
            ["model", "use_case"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tokens = Counter(
            "careflow_gateway_tokens",
            "Tokens by team, model and kind",
            ["team", "model", "kind"],
            registry=self.registry,
        )
        self.cost = Counter(
            "careflow_gateway_cost_usd", "Cost in USD", ["team", "model"], registry=self.registry
        )
        self.errors = Counter(
            "careflow_gateway_errors",
            "Refused or failed calls by outcome, feature and model version",
            ["outcome", "use_case", "model"],
            registry=self.registry,
        )
        self.provider_failures = Counter(
            "careflow_gateway_provider_failures",
            "Provider calls that failed over (overloaded, 5xx, timeout, ...)",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "careflow_gateway_fallbacks",
            "Calls served by a tier's fallback",
            ["tier"],
            registry=self.registry,
        )
        self.breaker = Gauge(
            "careflow_gateway_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            ["provider"],
            registry=self.registry,
        )

    def observe(self, rec: CallRecord) -> None:
        if rec.outcome not in ("ok", "shadow"):  # a shadow answer is a success nobody is served
            self.errors.labels(rec.outcome, rec.use_case, rec.model or "none").inc()
        if rec.model is None:  # refused before any provider answered
            return
        model = rec.model
        self.latency.labels(model, rec.use_case).observe(rec.latency_ms / 1000)
        self.tokens.labels(rec.team_id, model, "prompt").inc(rec.prompt_tokens)
        self.tokens.labels(rec.team_id, model, "completion").inc(rec.completion_tokens)
        self.tokens.labels(rec.team_id, model, "cached").inc(rec.cached_tokens)
        self.cost.labels(rec.team_id, model).inc(float(rec.cost_usd))
        if rec.fallback_used:
            self.fallbacks.labels(rec.tier).inc()
