"""Layer 2 of AI observability (seed P5): quality heuristics of every AI response, per day, feature and
model version, from what the gateway records of each call (`llm_calls`: finish reason, citation count,
disclaimer, length; no text, no PHI) and what teams said of it (`llm_feedback`).  `careflow observe
report` prints it; a drift in any column from one day to the next is what someone looks into."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import asyncpg


@dataclass(frozen=True)
class DayRow:
    day: date
    feature: str  # the gateway's use case
    model: str
    calls: int
    errors: int  # refused or failed (not ok, not shadow)
    shadow: int  # answers a candidate gave beside the champion, never served
    p50_ms: float
    p95_ms: float
    mean_chars: float  # response length
    max_tokens_share: float  # finish reason "max_tokens" (cut off) among answers
    disclaimer_share: float | None  # among answers of features that carry one (None: none do)
    mean_citations: float | None
    flagged: int  # answers flagged by a team (POST /v1/feedback)

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


_DAILY = """
SELECT date_trunc('day', c.created_at)::date AS day, c.use_case AS feature, coalesce(c.model, '-') AS model,
       count(*) AS calls,
       count(*) FILTER (WHERE c.outcome NOT IN ('ok', 'shadow')) AS errors,
       count(*) FILTER (WHERE c.outcome = 'shadow') AS shadow,
       coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY c.latency_ms), 0) AS p50_ms,
       coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY c.latency_ms), 0) AS p95_ms,
       coalesce(avg(c.response_chars) FILTER (WHERE c.outcome = 'ok'), 0) AS mean_chars,
       coalesce(avg((c.finish_reason IN ('max_tokens', 'length'))::int) FILTER (WHERE c.outcome = 'ok'), 0)
           AS max_tokens_share,
       avg(c.disclaimer_present::int) FILTER (WHERE c.outcome = 'ok') AS disclaimer_share,
       avg(c.citation_count) FILTER (WHERE c.outcome = 'ok') AS mean_citations,
       count(f.response_id) FILTER (WHERE f.flagged) AS flagged
FROM llm_calls c
LEFT JOIN llm_feedback f ON f.response_id = c.request_id AND f.team_id = c.team_id
WHERE c.created_at >= now() - make_interval(days => $1) AND ($2::text IS NULL OR c.use_case = $2)
GROUP BY 1, 2, 3
ORDER BY 1 DESC, 2, 3
"""


async def daily(pool: asyncpg.Pool, days: int = 7, feature: str | None = None) -> list[DayRow]:
    rows = await pool.fetch(_DAILY, days, feature)
    return [
        DayRow(
            day=r["day"],
            feature=r["feature"],
            model=r["model"],
            calls=r["calls"],
            errors=r["errors"],
            shadow=r["shadow"],
            p50_ms=float(r["p50_ms"]),
            p95_ms=float(r["p95_ms"]),
            mean_chars=float(r["mean_chars"]),
            max_tokens_share=float(r["max_tokens_share"]),
            disclaimer_share=None if r["disclaimer_share"] is None else float(r["disclaimer_share"]),
            mean_citations=None if r["mean_citations"] is None else float(r["mean_citations"]),
            flagged=r["flagged"],
        )
        for r in rows
    ]
