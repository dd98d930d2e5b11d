"""The scores table (migration 0015): the worklist, the nightly run's "already scored" check and its
drift sample, the shadow comparison.  Writes are idempotent on (encounter, role, version)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from careflow.models.readmission import ModelAlias, ModelScore, WriteRequest


@dataclass(frozen=True)
class ScoreRow:
    encounter_id: str
    role: str
    model_version: str
    workflow_id: str
    source: str
    patient_id: str
    probability: float
    tier: str
    factors: list[dict[str, Any]]
    lace: int
    narrative: str
    narrative_engine: str
    risk_assessment_id: str | None
    task_id: str | None
    discharged_at: datetime
    scored_at: datetime
    readmitted: bool | None


_COLUMNS = ", ".join(ScoreRow.__dataclass_fields__)


def _row(r: asyncpg.Record) -> ScoreRow:
    values = dict(r)
    values["factors"] = json.loads(values["factors"])
    return ScoreRow(**values)


async def save(
    pool: asyncpg.Pool, req: WriteRequest, tenant_id: str, ra_id: str, task_id: str | None
) -> None:
    """The champion's score (with its narrative, RiskAssessment and Task) and the challenger's shadow."""
    rows: list[tuple[ModelAlias, ModelScore]] = [(ModelAlias.CHAMPION, req.scores.champion)]
    if req.scores.challenger is not None:
        rows.append((ModelAlias.CHALLENGER, req.scores.challenger))
    rec = req.record
    async with pool.acquire() as conn:
        for role, s in rows:
            champion = role is ModelAlias.CHAMPION
            await conn.execute(
                """INSERT INTO readmission_scores (encounter_id, role, model_version, workflow_id, tenant_id,
                       source, patient_id, probability, tier, factors, lace, narrative, narrative_engine,
                       risk_assessment_id, task_id, discharged_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15, $16)
                   ON CONFLICT (encounter_id, role, model_version) DO UPDATE SET
                       narrative = EXCLUDED.narrative, narrative_engine = EXCLUDED.narrative_engine,
                       risk_assessment_id = EXCLUDED.risk_assessment_id, task_id = EXCLUDED.task_id""",
                rec.encounter_id,
                role.value,
                s.version,
                req.workflow_id,
                tenant_id,
                req.source.value,
                rec.patient_id,
                s.probability,
                s.tier.value,
                json.dumps([f.model_dump(mode="json") for f in s.factors]),
                rec.lace,
                req.narrative if champion else "",
                req.narrative_engine if champion else "",
                ra_id if champion else None,
                task_id if champion else None,
                rec.discharged_at,
            )


async def scored(pool: asyncpg.Pool, encounter_ids: Sequence[str]) -> set[str]:
    """Those of `encounter_ids` that have a champion score already."""
    rows = await pool.fetch(
        """SELECT DISTINCT encounter_id FROM readmission_scores
           WHERE role = 'champion' AND encounter_id = ANY($1)""",
        list(encounter_ids),
    )
    return {r["encounter_id"] for r in rows}


async def window_scores(pool: asyncpg.Pool, since: datetime, until: datetime, version: str) -> list[float]:
    """The champion `version`'s scores of the discharges in [since, until): the drift check's sample."""
    rows = await pool.fetch(
        """SELECT probability FROM readmission_scores WHERE role = 'champion' AND model_version = $3
           AND discharged_at >= $1 AND discharged_at < $2""",
        since,
        until,
        version,
    )
    return [float(r["probability"]) for r in rows]


async def record_alert(
    pool: asyncpg.Pool,
    workflow_id: str,
    version: str,
    since: datetime,
    until: datetime,
    scored: int,
    discharged: int,
    psi: float,
    threshold: float,
) -> None:
    await pool.execute(
        """INSERT INTO readmission_quality_alerts (workflow_id, model_version, window_start, window_end,
               scored, discharged, psi, psi_threshold) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (workflow_id) DO NOTHING""",
        workflow_id,
        version,
        since,
        until,
        scored,
        discharged,
        psi,
        threshold,
    )


async def alerts(pool: asyncpg.Pool, limit: int = 20) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM readmission_quality_alerts ORDER BY created_at DESC LIMIT $1", limit
    )
    return [dict(r) for r in rows]


async def worklist(pool: asyncpg.Pool, limit: int = 50, tiers: Sequence[str] = ("high",)) -> list[ScoreRow]:
    """The care-coordination worklist: champion scores of the given tiers, highest first."""
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM readmission_scores WHERE role = 'champion' AND tier = ANY($1)
            ORDER BY probability DESC, discharged_at DESC LIMIT $2""",  # noqa: S608 (column names only)
        list(tiers),
        limit,
    )
    return [_row(r) for r in rows]


async def of_encounter(pool: asyncpg.Pool, encounter_id: str) -> list[ScoreRow]:
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM readmission_scores WHERE encounter_id = $1 ORDER BY role, model_version",  # noqa: S608
        encounter_id,
    )
    return [_row(r) for r in rows]


async def latest(pool: asyncpg.Pool, limit: int = 1000) -> list[ScoreRow]:
    """The latest scores of both roles (shadow comparison)."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM readmission_scores ORDER BY scored_at DESC LIMIT $1",  # noqa: S608
        limit,
    )
    return [_row(r) for r in rows]


async def unsettled(
    pool: asyncpg.Pool, before: datetime, limit: int = 500
) -> list[tuple[str, str, datetime]]:
    """(encounter, patient, discharged at) of scored discharges before `before` without an outcome."""
    rows = await pool.fetch(
        """SELECT DISTINCT encounter_id, patient_id, discharged_at FROM readmission_scores
           WHERE role = 'champion' AND readmitted IS NULL AND discharged_at < $1
           ORDER BY discharged_at LIMIT $2""",
        before,
        limit,
    )
    return [(r["encounter_id"], r["patient_id"], r["discharged_at"]) for r in rows]


async def record_outcome(pool: asyncpg.Pool, encounter_id: str, readmitted: bool) -> int:
    """The 30-day outcome of a discharge, once known (compare's AUROC and calibration use it)."""
    status = await pool.execute(
        "UPDATE readmission_scores SET readmitted = $2 WHERE encounter_id = $1", encounter_id, readmitted
    )
    return int(status.split()[-1])
