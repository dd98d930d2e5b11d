"""Settling a finished call in one statement: the rate window's estimate replaced by the tokens
actually used, the budget hold released and the actual cost charged, and the call recorded.

One statement is one round trip and one commit (each commit waits for a WAL flush), which is most
of the gateway's own latency; and a charge can never exist without its call record, or the reverse.
It locks the rate event, then the ledger row; admission never holds both at once (each of its
statements commits on its own), so the two cannot deadlock.
"""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from careflow.llm.budget import Reservation, Spend
from careflow.llm.cost import CALL_FIELDS, CallRecord
from careflow.llm.ratelimit import RateTicket

_FIXED = 6  # parameters before the call record's
_SETTLE_AND_RECORD = f"""
WITH rate AS (
    UPDATE llm_rate_events SET tokens = $1 WHERE id = $2 AND tokens <> $1
), ledger AS (
    UPDATE llm_budget_ledger l
       SET reserved_usd = greatest(l.reserved_usd - $3, 0), spent_usd = l.spent_usd + $4
      FROM teams t
     WHERE l.team_id = $5 AND l.month = $6 AND t.team_id = l.team_id
 RETURNING l.spent_usd, t.monthly_budget_usd
), recorded AS (
    INSERT INTO llm_calls ({", ".join(CALL_FIELDS)})
    VALUES ({", ".join(f"${_FIXED + i + 1}" for i in range(len(CALL_FIELDS)))})
)
SELECT spent_usd, monthly_budget_usd FROM ledger"""  # noqa: S608 (constants only)


async def settle_and_record(
    conn: asyncpg.Connection,
    rec: CallRecord,
    ticket: RateTicket | None,
    reservation: Reservation | None,
    actual_usd: Decimal,
    actual_tokens: int,
) -> Spend | None:
    """Returns the month's spend when a reservation was settled, else None (nothing was held)."""
    row = await conn.fetchrow(
        _SETTLE_AND_RECORD,
        max(actual_tokens, 0),
        ticket.event_id if ticket else None,  # NULL matches no event: nothing admitted
        reservation.amount_usd if reservation else Decimal(0),
        actual_usd if reservation else Decimal(0),
        rec.team_id,
        reservation.month if reservation else None,  # NULL matches no ledger row
        *(getattr(rec, f) for f in CALL_FIELDS),
    )
    if row is None or reservation is None:
        return None
    return Spend(reservation.team_id, reservation.month, row["spent_usd"], row["monthly_budget_usd"])
