"""Admitting a call in one statement (function llm_admit_and_hold, migration 0012): the token
estimate into the team's rate window, then the worst-case cost held on its month's budget.

One round trip instead of two, and a call refused for its budget takes no tokens from the window.
Its counterpart after the call is careflow.llm.settlement.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import asyncpg

from careflow.llm.budget import BudgetLedger, BudgetSnapshot, Reservation
from careflow.llm.ratelimit import RateTicket, TokenRateLimiter

_ADMIT_AND_HOLD = (
    "SELECT event_id, retry_after_s, held, used_usd FROM llm_admit_and_hold($1, $2, $3, $4, $5, $6, $7)"
)


async def admit_and_hold(
    conn: asyncpg.Connection,
    limiter: TokenRateLimiter,
    ledger: BudgetLedger,
    snap: BudgetSnapshot,
    tokens: int,
    estimate_usd: Decimal,
    at: datetime | None,
) -> tuple[RateTicket, Reservation]:
    """Raises RateLimited (with retry-after) or BudgetExceeded (recorded as the month's block event)."""
    team = snap.team
    row = await conn.fetchrow(
        _ADMIT_AND_HOLD,
        team.team_id,
        tokens,
        team.tokens_per_minute,
        limiter.window_s,
        at,
        snap.month,
        estimate_usd,
    )
    assert row is not None  # the function always returns one row
    if row["held"]:
        return RateTicket(row["event_id"], tokens), Reservation(team.team_id, snap.month, estimate_usd)
    if row["used_usd"] is None:  # the window refused it; the budget was not asked
        raise limiter.refusal(team.team_id, team.tokens_per_minute, tokens, row["retry_after_s"])
    raise await ledger.blocked(snap, row["used_usd"], conn)
