"""Token rate limit per team: a sliding 60 s window in Postgres (function llm_rate_admit, 0004).

The estimate (prompt estimate + max_tokens) is admitted before the call and replaced by the actual
token count after it (careflow.llm.settlement), so the window reflects what the provider really used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from careflow.llm.errors import RateLimited
from careflow.llm.teams import connection


@dataclass(frozen=True)
class RateTicket:
    event_id: int
    tokens: int


class TokenRateLimiter:
    def __init__(self, pool: asyncpg.Pool, window_s: float = 60.0) -> None:
        self._pool = pool
        self.window_s = window_s

    async def admit(
        self,
        team_id: str,
        limit_tpm: int,
        tokens: int,
        at: datetime | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> RateTicket:
        async with connection(self._pool, conn) as conn:
            row = await conn.fetchrow(
                "SELECT event_id, retry_after_s FROM llm_rate_admit($1, $2, $3, $4, $5)",
                team_id,
                tokens,
                limit_tpm,
                self.window_s,
                at,
            )
        assert row is not None
        if row["event_id"] is None:
            raise self.refusal(team_id, limit_tpm, tokens, row["retry_after_s"])
        return RateTicket(row["event_id"], tokens)

    def refusal(self, team_id: str, limit_tpm: int, tokens: int, retry_after_s: float | None) -> RateLimited:
        """The refusal for a call the window cannot admit; without a retry-after, a whole window."""
        return RateLimited(team_id, limit_tpm, tokens, float(retry_after_s or self.window_s))

    async def used(self, team_id: str, at: datetime | None = None) -> int:
        async with self._pool.acquire() as conn:
            value = await conn.fetchval(
                """SELECT coalesce(sum(tokens), 0) FROM llm_rate_events
                    WHERE team_id = $1
                      AND at > coalesce($2::timestamptz, now()) - make_interval(secs => $3)""",
                team_id,
                at,
                self.window_s,
            )
        return int(value)
