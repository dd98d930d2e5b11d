"""Users' feedback on AI responses (seed P5 layer 2): thumbs up or down and flags per response, kept
in `llm_feedback` (migration 0018) beside the call it is about, and the flag rate of a feature's
responses from one model over a window: what the canary gate watches."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg

from careflow.observe.golden import FlagRate

Rating = Literal["up", "down"]
Reason = Literal["inaccurate", "unsafe", "fabricated", "incomplete", "offensive", "other"]


async def record(
    pool: asyncpg.Pool,
    team_id: str,
    response_id: str,
    rating: Rating | None,
    flagged: bool,
    reason: Reason | None,
) -> bool:
    """The team's feedback on one of its own responses (False: the team has no such response)."""
    async with pool.acquire() as conn:
        call = await conn.fetchrow(
            "SELECT use_case, model FROM llm_calls WHERE request_id = $1 AND team_id = $2 LIMIT 1",
            response_id, team_id,
        )  # fmt: skip
        if call is None:
            return False
        await conn.execute(
            """INSERT INTO llm_feedback (response_id, team_id, use_case, model, rating, flagged, reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (response_id, team_id) DO UPDATE SET rating = EXCLUDED.rating,
                   flagged = EXCLUDED.flagged, reason = EXCLUDED.reason, updated_at = now()""",
            response_id, team_id, call["use_case"], call["model"], rating, flagged, reason,
        )  # fmt: skip
    return True


async def flag_rate(pool: asyncpg.Pool, use_case: str, model: str, since: datetime) -> FlagRate:
    """Answered calls of `use_case` by `model` since `since`, and how many of them were flagged."""
    row = await pool.fetchrow(
        """SELECT count(*) AS responses, count(*) FILTER (WHERE f.flagged) AS flags
           FROM llm_calls c
           LEFT JOIN llm_feedback f ON f.response_id = c.request_id AND f.team_id = c.team_id
           WHERE c.use_case = $1 AND c.model = $2 AND c.outcome = 'ok' AND c.created_at >= $3""",
        use_case, model, since,
    )  # fmt: skip
    return FlagRate(int(row["responses"]), int(row["flags"]))
