"""Golden-query runs in Postgres (`golden_runs`, migration 0019): a version's first passing score is
its baseline, each later run is judged against the champion's: the note model's serving champion, or
for a gateway feature the version that last passed (a model swapped in the tier map is judged against
the one before it)."""

from __future__ import annotations

import json

import asyncpg

from careflow.observe.golden import GoldenScore


async def baseline(pool: asyncpg.Pool, feature: str, version: str) -> float | None:
    """The score `version` set the first time it passed (None: it never did)."""
    value = await pool.fetchval(
        """SELECT score FROM golden_runs WHERE feature = $1 AND version = $2 AND NOT regressed
           ORDER BY created_at, run_key LIMIT 1""",
        feature, version,
    )  # fmt: skip
    return float(value) if value is not None else None


async def last_passed(pool: asyncpg.Pool, feature: str) -> str | None:
    """The version of the feature's latest run that did not regress."""
    return await pool.fetchval(
        """SELECT version FROM golden_runs WHERE feature = $1 AND NOT regressed
           ORDER BY created_at DESC, run_key DESC LIMIT 1""",
        feature,
    )  # fmt: skip


async def record(pool: asyncpg.Pool, key: str, trigger: str, s: GoldenScore) -> GoldenScore:
    """Record a run once per key; a retry gets the run recorded first (the same verdict twice)."""
    await pool.execute(
        """INSERT INTO golden_runs (run_key, feature, version, trigger, n, score, baseline, regressed, worst)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb) ON CONFLICT (run_key) DO NOTHING""",
        key, s.feature, s.version, trigger, s.n, s.score, s.baseline, s.regressed, json.dumps(s.worst),
    )  # fmt: skip
    row = await pool.fetchrow("SELECT * FROM golden_runs WHERE run_key = $1", key)
    assert row is not None
    worst = tuple((str(c), float(v)) for c, v in json.loads(row["worst"]))
    return GoldenScore(row["feature"], row["version"], row["n"], row["score"], row["baseline"], worst)


async def recent(pool: asyncpg.Pool, feature: str, limit: int = 20) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM golden_runs WHERE feature = $1 ORDER BY created_at DESC LIMIT $2", feature, limit
    )
