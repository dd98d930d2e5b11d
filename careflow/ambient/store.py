"""The ambient tables (migration 0016): each note's review outcome and quality measures, the coder's
final codes, and the physicians' enrolled voice profiles.  Writes are idempotent (upserts by key)."""

from __future__ import annotations

import json

import asyncpg
import numpy as np
from numpy.typing import NDArray

from careflow.ambient.note import EDIT_WINDOW
from careflow.models.ambient import CodeCandidate, QualityRecord


async def record_review(pool: asyncpg.Pool, q: QualityRecord) -> list[float]:
    """Upsert the note's outcome; the physician's last EDIT_WINDOW edit distances, newest first."""
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO ambient_notes (workflow_id, encounter_id, physician_id, specialty, outcome,
                   edit_distance, signing_minutes, note_ready_minutes)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (workflow_id) DO UPDATE SET outcome = EXCLUDED.outcome,
                   edit_distance = EXCLUDED.edit_distance, signing_minutes = EXCLUDED.signing_minutes""",
            q.workflow_id, q.encounter_id, q.physician_id, q.specialty.value, q.outcome,
            q.edit_distance, q.signing_minutes, q.note_ready_minutes,
        )  # fmt: skip
        rows = await conn.fetch(
            """SELECT edit_distance FROM ambient_notes
               WHERE physician_id = $1 AND outcome = 'signed' AND edit_distance IS NOT NULL
               ORDER BY decided_at DESC LIMIT $2""",
            q.physician_id,
            EDIT_WINDOW,
        )
    return [float(r["edit_distance"]) for r in rows]


async def record_codes(pool: asyncpg.Pool, workflow_id: str, codes: list[CodeCandidate], coder: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE ambient_notes SET codes = $2::jsonb, coded_by = $3 WHERE workflow_id = $1",
            workflow_id,
            json.dumps([c.model_dump() for c in codes]),
            coder,
        )


async def save_profile(
    pool: asyncpg.Pool, practitioner_id: str, embedding: NDArray[np.float32], seconds: float
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO ambient_voice_profiles (practitioner_id, embedding, seconds) VALUES ($1, $2, $3)
               ON CONFLICT (practitioner_id) DO UPDATE SET embedding = EXCLUDED.embedding,
                   seconds = EXCLUDED.seconds, enrolled_at = now()""",
            practitioner_id,
            [float(x) for x in embedding],
            seconds,
        )


async def profile(pool: asyncpg.Pool, practitioner_id: str) -> NDArray[np.float32] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT embedding FROM ambient_voice_profiles WHERE practitioner_id = $1", practitioner_id
        )
    return None if row is None else np.asarray(row["embedding"], dtype=np.float32)
