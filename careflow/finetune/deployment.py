"""Which model version answers a feature's requests (seed P9 stage 4, P5): one row per AI feature in
`model_deployments` (migration 0017) that the gateway reads, so a rollback is a row update, never a
code deployment.  Every change is also an event in `model_deployment_events` (who, why, when).

- no candidate: the champion answers every request;
- `shadow`: the champion answers; the candidate answers the same request beside it, logged, never served;
- `canary`: a stable `percent` of requests (by a hash of the feature and the request id, so a request
  retried lands on the same version) is answered by the candidate, the rest by the champion;
- promotion makes the candidate champion; rollback clears the candidate and puts back the champion
  before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

CANARY_PERCENT = 10


class Stage(StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"


@dataclass(frozen=True)
class Deployment:
    feature: str
    champion: str | None = None  # the version that serves; None: the gateway's tier route
    candidate: str | None = None
    stage: Stage | None = None
    percent: int = 0


@dataclass(frozen=True)
class Routing:
    serves: str | None  # the version that answers (None: the tier route's model)
    shadow: str | None = None  # a version that answers beside it, logged only


def bucket(feature: str, request_id: str) -> int:
    """0-99, stable for a request: the canary split."""
    return int.from_bytes(hashlib.sha256(f"{feature}:{request_id}".encode()).digest()[:8], "big") % 100


def route(d: Deployment, request_id: str) -> Routing:
    if d.candidate is None or d.stage is None:
        return Routing(d.champion)
    if d.stage is Stage.SHADOW:
        return Routing(d.champion, shadow=d.candidate)
    return Routing(d.candidate if bucket(d.feature, request_id) < d.percent else d.champion)


class DeploymentRefused(Exception):
    """The change's precondition did not hold when it was to be made (nothing was changed)."""


_ROW = "SELECT champion, candidate, stage, percent FROM model_deployments WHERE feature = $1"


def _of(feature: str, row: asyncpg.Record | None) -> Deployment:
    if row is None:
        return Deployment(feature)
    stage = Stage(row["stage"]) if row["stage"] else None
    return Deployment(feature, row["champion"], row["candidate"], stage, row["percent"])


async def current(pool: asyncpg.Pool, feature: str) -> Deployment:
    return _of(feature, await pool.fetchrow(_ROW, feature))


async def _change(
    pool: asyncpg.Pool,
    d: Deployment,
    action: str,
    actor: str,
    reason: str,
    key: str,
    refuse: Callable[[Deployment], str | None] | None = None,
) -> Deployment:
    """Write the row and its event in one transaction; an event key seen before is a retry: no-op.
    `refuse` judges the row as it is, locked, before the change (its reason: DeploymentRefused)."""
    async with pool.acquire() as conn, conn.transaction():
        applied = await conn.fetchval("SELECT 1 FROM model_deployment_events WHERE event_key = $1", key)
        if refuse is not None and not applied:
            if (
                why := refuse(_of(d.feature, await conn.fetchrow(_ROW + " FOR UPDATE", d.feature)))
            ) is not None:
                raise DeploymentRefused(why)
        done = await conn.fetchval(
            """INSERT INTO model_deployment_events (event_key, feature, action, champion, candidate, stage,
                   percent, actor, reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_key) DO NOTHING RETURNING id""",
            key, d.feature, action, d.champion, d.candidate, d.stage.value if d.stage else None, d.percent,
            actor, reason,
        )  # fmt: skip
        if done is not None:
            await conn.execute(
                """INSERT INTO model_deployments (feature, champion, candidate, stage, percent, updated_by)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (feature) DO UPDATE SET champion = EXCLUDED.champion,
                       candidate = EXCLUDED.candidate, stage = EXCLUDED.stage, percent = EXCLUDED.percent,
                       updated_by = EXCLUDED.updated_by, updated_at = now()""",
                d.feature, d.champion, d.candidate, d.stage.value if d.stage else None, d.percent, actor,
            )  # fmt: skip
    return await current(pool, d.feature)


async def stage(
    pool: asyncpg.Pool,
    feature: str,
    candidate: str,
    to: Stage,
    actor: str,
    key: str,
    percent: int = CANARY_PERCENT,
) -> Deployment:
    now = await current(pool, feature)
    d = Deployment(feature, now.champion, candidate, to, percent if to is Stage.CANARY else 0)
    return await _change(pool, d, to.value, actor, f"{candidate} to {to.value}", key)


async def promote(pool: asyncpg.Pool, feature: str, version: str, actor: str, key: str) -> Deployment:
    return await _change(pool, Deployment(feature, version), "promote", actor, f"{version} is champion", key)


async def rollback(
    pool: asyncpg.Pool, feature: str, back_to: str | None, actor: str, reason: str, key: str
) -> Deployment:
    """The candidate serves nowhere again and `back_to` (the champion before it: the same one in shadow
    or canary, the previous one after a promotion) answers everything."""
    return await _change(pool, Deployment(feature, back_to), "rollback", actor, reason, key)


async def restore(
    pool: asyncpg.Pool, feature: str, version: str, back_to: str | None, actor: str, reason: str, key: str
) -> Deployment:
    """A promoted champion taken back one step, only while it is still the champion with no candidate
    in flight (judged and changed in one transaction: a saga starting meanwhile waits, then is seen)."""

    def refuse(now: Deployment) -> str | None:
        if now.champion != version:
            return f"version {version} no longer serves {feature} (champion: {now.champion or 'base'})"
        if now.candidate and now.stage:
            return f"candidate {now.candidate} is in {now.stage.value}: roll its saga back first"
        return None

    return await _change(pool, Deployment(feature, back_to), "rollback", actor, reason, key, refuse)


async def champion_before(pool: asyncpg.Pool, feature: str, version: str) -> tuple[bool, str | None]:
    """(promoted, the champion before it): what answered the feature before `version`'s latest
    promotion (None: the base, or the tier route); promoted False when `version` never was."""
    row = await pool.fetchrow(
        """SELECT (SELECT champion FROM model_deployment_events b WHERE b.feature = p.feature AND b.id < p.id
                   ORDER BY b.id DESC LIMIT 1) AS before
           FROM model_deployment_events p WHERE p.feature = $1 AND p.action = 'promote' AND p.champion = $2
           ORDER BY p.id DESC LIMIT 1""",
        feature, version,
    )  # fmt: skip
    return (row is not None, row["before"] if row is not None else None)


async def history(pool: asyncpg.Pool, feature: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM model_deployment_events WHERE feature = $1 ORDER BY id", feature
    )  # fmt: skip
