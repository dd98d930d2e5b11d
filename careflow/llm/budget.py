"""Monthly budgets per team: reserve the estimated cost before a call, settle the actual cost after
(careflow.llm.settlement).

The reservation is one conditional UPDATE (spent + reserved + estimate <= budget) on the team's
month row; Postgres re-checks the condition on the locked row, so any number of concurrent calls
together stay within the budget.  Thresholds (seed P3): an alert event at 80 % of the budget
used, automatic downgrade to the Efficient tier at 90 %, refusal at 100 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg

from careflow.llm.errors import BudgetExceeded, UnknownTeam
from careflow.llm.teams import Team, connection
from careflow.security.logging import get_logger

log = get_logger(__name__)


def month_of(at: datetime | None = None) -> date:
    t = (at or datetime.now(UTC)).astimezone(UTC)
    return date(t.year, t.month, 1)


@dataclass(frozen=True)
class BudgetSnapshot:
    team: Team
    month: date
    spent_usd: Decimal
    reserved_usd: Decimal
    breaker_watch: frozenset[str] = frozenset()  # providers whose breaker must be asked before a call

    @property
    def used_fraction(self) -> float:
        budget = self.team.monthly_budget_usd
        if budget <= 0:
            return float("inf")
        return float((self.spent_usd + self.reserved_usd) / budget)


@dataclass(frozen=True)
class Reservation:
    team_id: str
    month: date
    amount_usd: Decimal


@dataclass(frozen=True)
class Spend:
    """The team's month after a settled charge: what the 80 % alert is checked against."""

    team_id: str
    month: date
    spent_usd: Decimal
    budget_usd: Decimal


_SNAPSHOT = """
SELECT t.team_id, t.display_name, t.allowed_tiers, t.monthly_budget_usd, t.tokens_per_minute,
       t.phi_permitted, t.kb_tenants,
       coalesce(l.spent_usd, 0) AS spent_usd, coalesce(l.reserved_usd, 0) AS reserved_usd,
       -- Rides along to save the gateway a round trip: providers whose breaker is not plainly closed.
       ARRAY(SELECT b.provider FROM llm_breakers b
              WHERE b.state <> 'closed' OR cardinality(b.failures) > 0) AS breaker_watch
  FROM teams t LEFT JOIN llm_budget_ledger l ON l.team_id = t.team_id AND l.month = $2
 WHERE t.team_id = $1"""

_EVENT = """
INSERT INTO llm_budget_events (team_id, month, kind, used_fraction) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING RETURNING kind"""


class BudgetLedger:
    def __init__(self, pool: asyncpg.Pool, alert_at: float = 0.8, downgrade_at: float = 0.9) -> None:
        self._pool = pool
        self.alert_at = alert_at
        self.downgrade_at = downgrade_at

    async def snapshot(
        self, team_id: str, at: datetime | None = None, conn: asyncpg.Connection | None = None
    ) -> BudgetSnapshot:
        """The team's configuration and its month's ledger, in one round trip."""
        month = month_of(at)
        async with connection(self._pool, conn) as conn:
            row = await conn.fetchrow(_SNAPSHOT, team_id, month)
        if row is None:
            raise UnknownTeam(team_id)
        return BudgetSnapshot(
            Team.from_row(row), month, row["spent_usd"], row["reserved_usd"], frozenset(row["breaker_watch"])
        )

    def should_downgrade(self, snap: BudgetSnapshot) -> bool:
        return snap.used_fraction >= self.downgrade_at

    async def blocked(
        self, snap: BudgetSnapshot, used_usd: Decimal, conn: asyncpg.Connection
    ) -> BudgetExceeded:
        """The refusal for a call the budget cannot hold, recorded as the month's block event."""
        team = snap.team
        await self._event(conn, team, snap.month, "block", used_usd)
        return BudgetExceeded(
            team.team_id, snap.month.strftime("%Y-%m"), float(used_usd), float(team.monthly_budget_usd)
        )

    async def note_spend(self, spend: Spend, conn: asyncpg.Connection | None = None) -> None:
        """The 80 % alert, once a settled charge brings the month's spend to it."""
        budget = spend.budget_usd
        if budget > 0 and spend.spent_usd >= budget * Decimal(str(self.alert_at)):
            async with connection(self._pool, conn) as conn:
                await self._event(conn, spend.team_id, spend.month, "alert", spend.spent_usd, budget)

    async def note_downgrade(self, snap: BudgetSnapshot, conn: asyncpg.Connection | None = None) -> None:
        async with connection(self._pool, conn) as conn:
            await self._event(conn, snap.team, snap.month, "downgrade", snap.spent_usd + snap.reserved_usd)

    async def events(self, team_id: str) -> list[tuple[date, str]]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT month, kind FROM llm_budget_events WHERE team_id = $1 ORDER BY created_at, kind",
                team_id,
            )
        return [(r["month"], r["kind"]) for r in rows]

    async def _event(
        self,
        conn: asyncpg.Connection,
        team: Team | str,
        month: date,
        kind: str,
        used_usd: Decimal,
        budget_usd: Decimal | None = None,
    ) -> None:
        team_id = team if isinstance(team, str) else team.team_id
        budget = (
            budget_usd
            if budget_usd is not None
            else (team.monthly_budget_usd if isinstance(team, Team) else 0)
        )
        fraction = float(used_usd / budget) if budget else 1.0
        new = await conn.fetchval(_EVENT, team_id, month, kind, min(round(fraction, 4), 9999.0))
        if new is not None:
            # The alert is a structured log event (ids and numbers only) for log-based alerting.
            log.warning("llm budget threshold", team_id=team_id, month=str(month), kind=kind, used=fraction)
