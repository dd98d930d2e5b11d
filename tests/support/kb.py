"""The starter knowledge base, ingested once per test session into its own tenant.

Import the fixtures into a test module (`from tests.support.kb import kb_pool, starter_kb`).  Ingestion is
idempotent by content hash and the result is cached per process, so modules that import the fixtures
share one embedding pass (~10-30 s).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest_asyncio

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.kb import ingest
from careflow.kb.cache import tenant_transaction

ROOT = Path(__file__).resolve().parents[2]
STARTER = ROOT / "careflow" / "kb" / "starter"
EVAL = ROOT / "careflow" / "kb" / "eval"
KB_TENANT = "kb-query-tests"


@dataclass(frozen=True)
class StarterKb:
    pool: asyncpg.Pool
    tenant_id: str
    documents: int
    chunks: int


_ingested: dict[str, tuple[int, int]] = {}


async def ingest_starter(pool: asyncpg.Pool, tenant_id: str) -> tuple[int, int]:
    """Ingest careflow/kb/starter into the tenant (once per process); (documents, chunks)."""
    if tenant_id not in _ingested:
        names = [s.name for s in ingest.discover(STARTER)]
        results = await ingest.ingest_files(pool, tenant_id, STARTER, names)
        failed = [r.source_file for r in results if r.status == "rejected"]
        assert not failed, f"starter documents rejected: {failed}"
        chunks = sum(r.chunks_written + r.chunks_unchanged for r in results)
        _ingested[tenant_id] = (len(results), chunks)
    return _ingested[tenant_id]


@pytest_asyncio.fixture(scope="session")
async def kb_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(Settings())
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture(scope="session")
async def starter_kb(kb_pool: asyncpg.Pool) -> StarterKb:
    documents, chunks = await ingest_starter(kb_pool, KB_TENANT)
    return StarterKb(kb_pool, KB_TENANT, documents, chunks)


async def clear_cache(pool: asyncpg.Pool, tenant_id: str) -> None:
    """Forget the tenant's cached answers."""
    async with tenant_transaction(pool, tenant_id) as conn:
        await conn.execute("DELETE FROM kb_answer_cache WHERE tenant_id = $1", tenant_id)
