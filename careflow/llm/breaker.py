"""Circuit breaker per provider, its state in Postgres so every worker and API replica shares it.

closed -> open after `failures` failures within `window_s`; open -> half_open after `open_s`, when
exactly one caller wins the conditional UPDATE and becomes the probe; the probe's success closes the
breaker, its failure re-opens it for another `open_s`.  Time is the database's now() unless a test
passes `at`, so the 60 s windows are tested without waiting.

A DR failover may `hold` a breaker open (`held_by` its incident): no probe is admitted and no success
closes it until the failover sees the provider answer again and calls `release`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg

from careflow.llm.teams import connection
from careflow.security.logging import get_logger

log = get_logger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Permit:
    """Leave to call a provider.  `probe`: this call decides whether a half-open breaker closes."""

    provider: str
    probe: bool
    had_failures: bool  # lets a success skip the reset write when there is nothing to reset


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    window_s: float = 60.0
    open_s: float = 60.0
    probe_ttl_s: float = 120.0


# $2 is the time: the database's now() unless a test passes one (c.t below).
_READ = "SELECT state, cardinality(failures) AS n, opened_at FROM llm_breakers WHERE provider = $1"

# The single admission of a probe: only one caller's UPDATE matches state='open'.
_ADMIT_PROBE = """
UPDATE llm_breakers SET state = 'half_open', probe_started_at = c.t, updated_at = c.t
  FROM (SELECT coalesce($2::timestamptz, now()) AS t) AS c
 WHERE provider = $1 AND held_by IS NULL
   AND ((state = 'open' AND opened_at <= c.t - make_interval(secs => $3))
        OR (state = 'half_open' AND probe_started_at <= c.t - make_interval(secs => $4)))
RETURNING provider"""

# EXCLUDED.updated_at is the failure's time.  Failures older than the window are pruned on write.
_FAILURE = """
INSERT INTO llm_breakers AS b (provider, state, failures, opened_at, updated_at)
SELECT $1, CASE WHEN $4 <= 1 THEN 'open' ELSE 'closed' END, ARRAY[c.t], CASE WHEN $4 <= 1 THEN c.t END, c.t
  FROM (SELECT coalesce($2::timestamptz, now()) AS t) AS c
ON CONFLICT (provider) DO UPDATE SET
    failures = ARRAY(SELECT f FROM unnest(b.failures) AS f
                      WHERE f > EXCLUDED.updated_at - make_interval(secs => $3) ORDER BY f)
               || EXCLUDED.updated_at,
    state = CASE
        WHEN $5 THEN 'open'                                -- failed probe
        WHEN b.state <> 'closed' THEN b.state              -- late failure of a call admitted earlier
        WHEN 1 + (SELECT count(*) FROM unnest(b.failures) AS f
                   WHERE f > EXCLUDED.updated_at - make_interval(secs => $3)) >= $4 THEN 'open'
        ELSE 'closed' END,
    opened_at = CASE
        WHEN $5 THEN EXCLUDED.updated_at                   -- failed probe: open for another period
        WHEN b.state <> 'closed' THEN b.opened_at
        WHEN 1 + (SELECT count(*) FROM unnest(b.failures) AS f
                   WHERE f > EXCLUDED.updated_at - make_interval(secs => $3)) >= $4 THEN EXCLUDED.updated_at
        ELSE NULL END,
    updated_at = EXCLUDED.updated_at
RETURNING state"""

_CLOSE = """
UPDATE llm_breakers SET state = 'closed', failures = '{}', opened_at = NULL, probe_started_at = NULL,
       updated_at = coalesce($2::timestamptz, now())
 WHERE provider = $1 AND held_by IS NULL AND ($3 OR state = 'closed')
RETURNING provider"""

# The first incident to hold a breaker keeps it; RETURNING says who holds it.
_HOLD = """
INSERT INTO llm_breakers AS b (provider, state, opened_at, held_by, updated_at)
VALUES ($1, 'open', now(), $2, now())
ON CONFLICT (provider) DO UPDATE SET
    state = 'open', probe_started_at = NULL, held_by = coalesce(b.held_by, EXCLUDED.held_by),
    opened_at = CASE WHEN b.state = 'open' THEN b.opened_at ELSE now() END, updated_at = now()
RETURNING held_by"""

_RELEASE = """
UPDATE llm_breakers SET state = 'closed', failures = '{}', opened_at = NULL, probe_started_at = NULL,
       held_by = NULL, updated_at = now()
 WHERE provider = $1 AND held_by = $2
RETURNING provider"""


class CircuitBreaker:
    def __init__(self, pool: asyncpg.Pool, settings: BreakerSettings | None = None) -> None:
        self._pool = pool
        self.settings = settings or BreakerSettings()

    async def acquire(
        self, provider: str, at: datetime | None = None, conn: asyncpg.Connection | None = None
    ) -> Permit | None:
        """A permit to call `provider`, or None while its breaker is open (or a probe is out)."""
        async with connection(self._pool, conn) as conn:
            row = await conn.fetchrow(_READ, provider)
            if row is None or row["state"] == BreakerState.CLOSED:
                return Permit(provider, probe=False, had_failures=bool(row and row["n"]))
            admitted = await conn.fetchval(
                _ADMIT_PROBE, provider, at, self.settings.open_s, self.settings.probe_ttl_s
            )
        if admitted is None:
            return None
        log.info("breaker half-open: probe admitted", provider=provider)
        return Permit(provider, probe=True, had_failures=True)

    async def record_success(
        self, permit: Permit, at: datetime | None = None, conn: asyncpg.Connection | None = None
    ) -> None:
        # Success resets the counter; a probe's success closes the breaker.
        if not permit.probe and not permit.had_failures:
            return
        async with connection(self._pool, conn) as conn:
            closed = await conn.fetchval(_CLOSE, permit.provider, at, permit.probe)
        if permit.probe and closed:
            log.info("breaker closed after a successful probe", provider=permit.provider)

    async def record_failure(
        self, permit: Permit, at: datetime | None = None, conn: asyncpg.Connection | None = None
    ) -> BreakerState:
        async with connection(self._pool, conn) as conn:
            state = await conn.fetchval(
                _FAILURE,
                permit.provider,
                at,
                self.settings.window_s,
                self.settings.failures,
                permit.probe,
            )
        result = BreakerState(state)
        if result is BreakerState.OPEN:
            log.warning("breaker open", provider=permit.provider, probe_failed=permit.probe)
        return result

    async def hold(self, provider: str, by: str) -> str:
        """Open `provider`'s breaker and keep it open for `by`; returns who holds it (an earlier holder
        keeps it)."""
        async with self._pool.acquire() as conn:
            holder = str(await conn.fetchval(_HOLD, provider, by))
        log.warning("breaker held open", provider=provider, held_by=holder)
        return holder

    async def release(self, provider: str, by: str) -> bool:
        """Close the breaker `by` holds (the provider answers again); False: `by` does not hold it."""
        async with self._pool.acquire() as conn:
            released = await conn.fetchval(_RELEASE, provider, by) is not None
        if released:
            log.info("breaker hold released", provider=provider, held_by=by)
        return released

    async def held(self) -> dict[str, str]:
        """Held breakers: provider -> holder."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT provider, held_by FROM llm_breakers WHERE held_by IS NOT NULL")
        return {r["provider"]: r["held_by"] for r in rows}

    async def state(self, provider: str) -> BreakerState:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_READ, provider)
        return BreakerState.CLOSED if row is None else BreakerState(row["state"])

    async def states(self) -> dict[str, BreakerState]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT provider, state FROM llm_breakers")
        return {r["provider"]: BreakerState(r["state"]) for r in rows}
