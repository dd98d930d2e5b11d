"""Platform probe: is this worker alive, can it reach Postgres, does its payload codec round-trip."""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from careflow.models.platform import ProbeInput, ProbeResult


class PlatformActivities:
    """Clients are built once per worker process and injected."""

    def __init__(self, pool: asyncpg.Pool, codec: PayloadCodec | None, identity: str) -> None:
        self._pool = pool
        self._codec = codec
        self._identity = identity

    @activity.defn(name="platform.probe")
    async def probe(self, inp: ProbeInput) -> ProbeResult:
        errors: list[str] = []
        pgvector: str | None = None
        try:
            async with self._pool.acquire() as conn:
                pgvector = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                await conn.execute(
                    """INSERT INTO platform_probes (probe_key, task_queue, worker) VALUES ($1, $2, $3)
                       ON CONFLICT (probe_key) DO UPDATE SET worker = EXCLUDED.worker, probed_at = now()""",
                    inp.probe_key,
                    inp.task_queue,
                    self._identity,
                )
            db_ok = pgvector is not None
            if not db_ok:
                errors.append("database: pgvector extension missing")
        except (OSError, asyncpg.PostgresError) as exc:
            db_ok = False
            errors.append(f"database: {type(exc).__name__}")

        codec_ok, key_id = await self._codec_round_trip(errors)
        return ProbeResult(
            task_queue=inp.task_queue,
            worker_identity=self._identity,
            database_ok=db_ok,
            pgvector_version=pgvector,
            codec_ok=codec_ok,
            codec_key_id=key_id,
            error="; ".join(errors) or None,
        )

    async def _codec_round_trip(self, errors: list[str]) -> tuple[bool, str | None]:
        if self._codec is None:
            errors.append("codec: no payload codec configured (payloads would be stored in plain text)")
            return False, None
        sample = Payload(metadata={"encoding": b"json/plain"}, data=b'{"probe":"careflow"}')
        try:
            [encoded] = await self._codec.encode([sample])
            [decoded] = await self._codec.decode([encoded])
        except Exception as exc:
            errors.append(f"codec: {type(exc).__name__}")
            return False, None
        ok = decoded == sample and encoded.data != sample.data
        if not ok:
            errors.append("codec: round trip changed the payload or did not encrypt it")
        key = encoded.metadata.get("encryption-key-id", b"").decode() or None
        return ok, key
