"""The knowledge-base store and ingestion pipeline on the session Postgres with real MiniLM embeddings:
idempotent re-ingestion, atomic per-document swaps (with the semantic cache invalidated in the same
transaction), tenant isolation in the SQL and by forced row-level security for the application role,
HNSW iterative scans under a tenant filter, and the quality gate."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import random
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from pgvector.asyncpg import register_vector

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.kb import store
from careflow.kb.cache import SemanticCache
from careflow.kb.chunker import chunk_document
from careflow.kb.embed import Embedder, get_embedder
from careflow.kb.extract import extract
from careflow.kb.ingest import DocumentResult, discover, ingest_files, plan
from careflow.kb.quality import MAX_WORDS, validate
from tests.fixtures.kb import EXPECTED, build_folder
from tests.support.wait import wait_until

HYPERK = "hyperkalemia-protocol.txt"


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


class CountingEmbedder(Embedder):
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        self.texts = 0

    async def aencode(self, texts: Sequence[str], batch_size: int = 64) -> list[list[float]]:
        self.texts += len(texts)
        return await super().aencode(texts, batch_size)


@pytest_asyncio.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(Settings(database_url=database_url))
    yield p
    await p.close()


@pytest_asyncio.fixture(scope="module")
async def app_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The application role: not a superuser, so row-level security applies to it."""
    p = await asyncpg.create_pool(
        database_url.replace("://postgres@", "://careflow_app@"), min_size=1, max_size=4, init=register_vector
    )
    assert p is not None
    yield p
    await p.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_folder(tmp_path_factory.mktemp("kb-store"))


def names(folder: Path) -> list[str]:
    return [s.name for s in discover(folder)]


def expected_chunks(folder: Path) -> int:
    return sum(len(validate(chunk_document(extract(folder / n), "x")).accepted) for n in EXPECTED)


@pytest_asyncio.fixture(scope="module")
async def tenant_a(pool: asyncpg.Pool, folder: Path) -> str:
    t = tenant()
    results = await ingest_files(pool, t, folder, names(folder))
    assert {r.status for r in results} == {"inserted"}
    return t


async def snapshot(pool: asyncpg.Pool, t: str, exclude: str = "") -> dict[str, tuple[str, str]]:
    """Row versions of a tenant's rows: xmin changes on any write, so equality means nothing was written."""
    rows = await pool.fetch(
        "SELECT 'c:' || chunk_id AS k, xmin::text AS x, ctid::text AS c FROM kb_chunks"
        " WHERE tenant_id = $1 AND document_id <> $2"
        " UNION ALL SELECT 'd:' || document_id, xmin::text, ctid::text FROM kb_documents"
        " WHERE tenant_id = $1 AND document_id <> $2",
        t,
        exclude,
    )
    return {r["k"]: (r["x"], r["c"]) for r in rows}


async def test_ingest_then_reingest_unchanged_writes_nothing(pool: asyncpg.Pool, folder: Path) -> None:
    t, embedder = tenant(), CountingEmbedder()
    first = await ingest_files(pool, t, folder, names(folder), embedder=embedder)
    assert sorted(r.document_id or "" for r in first) == sorted(v[0] for v in EXPECTED.values())
    assert {r.status for r in first} == {"inserted"}
    total = sum(r.chunks_written for r in first)
    assert total == expected_chunks(folder) == embedder.texts
    assert await pool.fetchval("SELECT count(*) FROM kb_chunks WHERE tenant_id = $1", t) == total
    before = await snapshot(pool, t)

    p = await plan(pool, t, folder)
    assert (p.changed, len(p.unchanged), p.chunks_unchanged) == ([], len(EXPECTED), total)
    # a retried batch (bypassing the plan) finds every document stored with the same hash
    again = await ingest_files(pool, t, folder, names(folder), embedder=embedder)
    assert {r.status for r in again} == {"unchanged"}
    assert sum(r.chunks_written for r in again) == 0
    assert sum(r.chunks_unchanged for r in again) == total
    assert embedder.texts == total  # nothing embedded the second time
    assert await snapshot(pool, t) == before


def update_hyperkalemia(folder: Path) -> None:
    path = folder / HYPERK
    text = path.read_text()
    text = text.replace("Version: 2", "Version: 3").replace(
        "10 units of soluble insulin", "5 units of soluble insulin"
    )
    text = text[: text.index("2.2 Removing potassium")]
    path.write_text(text)


async def test_updating_one_document_swaps_its_chunks_and_leaves_the_others(
    pool: asyncpg.Pool, folder: Path, tmp_path: Path
) -> None:
    t, work = tenant(), tmp_path / "src"
    shutil.copytree(folder, work)
    await ingest_files(pool, t, work, names(work))
    others = await snapshot(pool, t, exclude="hyperkalemia-acute")
    cache = SemanticCache(pool)
    vector = get_embedder().encode_one("insulin dose for hyperkalaemia")
    cites_hyperk = await cache.store(
        t, "insulin dose in hyperkalaemia?", vector, {"a": 1}, ["hyperkalemia-acute"], []
    )
    cites_cap = await cache.store(t, "outpatient CAP antibiotic?", vector, {"a": 2}, ["cap-outpatient"], [])

    update_hyperkalemia(work)
    p = await plan(pool, t, work)
    assert [s.name for s in p.changed] == [HYPERK]
    [result] = await ingest_files(pool, t, work, [s.name for s in p.changed])
    assert (result.status, result.document_id) == ("replaced", "hyperkalemia-acute")
    assert result.embeddings_reused >= 1  # unchanged sections keep their vectors
    assert result.cache_invalidated == 1

    rows = await pool.fetch(
        "SELECT chunk_id, version, text FROM kb_chunks WHERE tenant_id = $1 AND document_id = $2",
        t,
        "hyperkalemia-acute",
    )
    assert len(rows) == result.chunks_written
    assert {r["version"] for r in rows} == {"3"} and all("@v3#" in r["chunk_id"] for r in rows)
    assert not any(
        r["chunk_id"].split("#")[1].startswith("2.2/") for r in rows
    )  # the removed section is gone
    assert any("5 units of soluble insulin" in r["text"] for r in rows)
    assert (
        await pool.fetchval(
            "SELECT version FROM kb_documents WHERE tenant_id = $1 AND document_id = $2",
            t,
            "hyperkalemia-acute",
        )
        == "3"
    )
    assert await snapshot(pool, t, exclude="hyperkalemia-acute") == others  # the others untouched
    invalidated = dict(
        await pool.fetch(
            "SELECT id, invalidated_at IS NOT NULL FROM kb_answer_cache WHERE id = ANY($1::bigint[])",
            [cites_hyperk, cites_cap],
        )
    )
    assert invalidated == {cites_hyperk: True, cites_cap: False}


async def chunk_ids(pool: asyncpg.Pool, t: str) -> set[str]:
    return {r["chunk_id"] for r in await pool.fetch("SELECT chunk_id FROM kb_chunks WHERE tenant_id = $1", t)}


async def a_vector(pool: asyncpg.Pool, t: str) -> list[float]:
    v = await pool.fetchval(
        "SELECT embedding FROM kb_chunks WHERE tenant_id = $1 ORDER BY chunk_id LIMIT 1", t
    )
    return list(v.to_list())


async def test_swap_is_atomic_for_concurrent_readers(
    pool: asyncpg.Pool, database_url: str, folder: Path, tmp_path: Path
) -> None:
    t, work = tenant(), tmp_path / "src"
    shutil.copytree(folder, work)
    await ingest_files(pool, t, work, [HYPERK])
    old = await chunk_ids(pool, t)
    update_hyperkalemia(work)
    probe = await a_vector(pool, t)

    # Hold the document row: the swap deletes the old chunks, then waits on this lock before it can
    # write the new document row and chunks, all inside its one transaction.
    blocker = await asyncpg.connect(database_url)
    holding = blocker.transaction()
    await holding.start()
    await blocker.execute("SELECT 1 FROM kb_documents WHERE tenant_id = $1 FOR UPDATE", t)
    swap = asyncio.create_task(ingest_files(pool, t, work, [HYPERK]))
    try:
        await wait_until(
            lambda: pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%INSERT INTO kb_documents%'"
            ),
            timeout=60,
            what="the swap to be mid-transaction",
        )
        # mid-swap a reader sees the old version, complete
        during = {
            r["chunk_id"] for r in await pool.fetch("SELECT chunk_id FROM kb_chunks WHERE tenant_id = $1", t)
        }
        assert during == old
        hits = await store.search(pool, t, probe, k=3)
        assert hits and all("@v2#" in h.chunk_id for h in hits)
    finally:
        await holding.rollback()
        await blocker.close()
    [result] = await swap
    assert result.status == "replaced"
    after = {
        r["chunk_id"] for r in await pool.fetch("SELECT chunk_id FROM kb_chunks WHERE tenant_id = $1", t)
    }
    assert after and not (after & old) and all("@v3#" in c for c in after)


async def test_cross_tenant_retrieval_returns_nothing_in_the_store(pool: asyncpg.Pool, tenant_a: str) -> None:
    other = tenant()
    question = "first-line antibiotic for an outpatient with pneumonia and no comorbidities"
    own = await store.retrieve(pool, tenant_a, question, k=5)
    assert len(own) == 5 and own[0].document_id == "cap-outpatient"
    assert "Recommendation 2.1.1" in own[0].text and 0 < own[0].score <= 1
    assert all(a.score >= b.score for a, b in itertools.pairwise(own))
    assert await store.retrieve(pool, other, question, k=5) == []
    vector = (await get_embedder().aencode([question]))[0]
    assert await store.search(pool, other, vector, k=50) == []
    # doc-type filter
    formulary = await store.search(pool, tenant_a, vector, k=5, doc_types=["formulary"])
    assert formulary and {c.doc_type for c in formulary} == {"formulary"}
    ev = store.as_evidence(own[0])
    assert ev.id == f"kb:{own[0].chunk_id}" and ev.kind == "guideline" and ev.text == own[0].text
    assert ev.title == f"{own[0].document_title} — {own[0].section} (effective 2025-02-01)"


async def test_row_level_security_holds_the_app_role_to_its_tenant(
    pool: asyncpg.Pool, app_pool: asyncpg.Pool, tenant_a: str, folder: Path
) -> None:
    other = tenant()
    async with app_pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "careflow_app"
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    vector = await a_vector(pool, tenant_a)
    as_superuser = await store.search(pool, tenant_a, vector)
    assert await store.search(app_pool, tenant_a, vector) == as_superuser
    assert await store.search(app_pool, other, vector) == []

    total = await pool.fetchval("SELECT count(*) FROM kb_chunks WHERE tenant_id = $1", tenant_a)
    async with app_pool.acquire() as conn:
        # queries that forget the tenant filter still see only the tenant named for the transaction
        unscoped = "SELECT count(*) FROM kb_chunks"
        assert await conn.fetchval(unscoped) == 0  # no tenant named: nothing
        async with conn.transaction():
            await conn.execute("SELECT set_config('careflow.tenant_id', $1, true)", other)
            assert await conn.fetchval(unscoped) == 0
            assert await conn.fetchval("SELECT count(*) FROM kb_documents") == 0
            nearest = await conn.fetch(
                "SELECT chunk_id FROM kb_chunks ORDER BY embedding <=> $1 LIMIT 5", vector
            )
            assert nearest == []
            assert await conn.execute("DELETE FROM kb_chunks") == "DELETE 0"
            assert await conn.execute("UPDATE kb_documents SET title = 'x'") == "UPDATE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with conn.transaction():  # writing a row of another tenant is refused
                await conn.execute("SELECT set_config('careflow.tenant_id', $1, true)", other)
                await conn.execute(
                    INSERT_DOCUMENT,
                    tenant_a,
                    "x",
                )
        async with conn.transaction():
            await conn.execute("SELECT set_config('careflow.tenant_id', $1, true)", tenant_a)
            assert await conn.fetchval(unscoped) == total
    # the pipeline itself works as the app role (RLS's WITH CHECK admits the tenant it names)
    [result] = await ingest_files(app_pool, other, folder, ["cap-outpatient.md"])
    assert result.status == "inserted" and result.chunks_written > 0
    assert await pool.fetchval("SELECT count(*) FROM kb_chunks WHERE tenant_id = $1", tenant_a) == total


def near(vector: Sequence[float], rng: random.Random, spread: float = 0.01) -> list[float]:
    v = [x + rng.gauss(0, spread) for x in vector]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


INSERT_DOCUMENT = (
    "INSERT INTO kb_documents (tenant_id, document_id, title, source_organization, effective_date,"
    " doc_type, version, content_hash, source_file, chunk_count, embedding_model)"
    " VALUES ($1, $2, 'x', 'x', '2025-01-01', 'guideline', '1', 'h', 'x', 0, 'm')"
)
INSERT_NOISE_CHUNK = (
    "INSERT INTO kb_chunks (tenant_id, chunk_id, document_id, ordinal, section, section_number,"
    " document_title, source_organization, effective_date, doc_type, version, text, content_hash, embedding)"
    " VALUES ($1, $2, 'noise', $3, '1 N', '1', 'n', 'n', '2025-01-01', 'guideline', '1', 'n', $2, $4)"
)


async def test_tenant_filter_keeps_recall_through_hnsw_iterative_scan(
    pool: asyncpg.Pool, tenant_a: str
) -> None:
    """Another tenant's rows crowd the query's neighbourhood: a plain HNSW scan returns its candidates,
    the tenant filter drops them, and fewer than k rows remain.  The store's iterative scan keeps
    scanning until k of the tenant's rows are found, the same ones an exact scan finds."""
    noise, rng = tenant(), random.Random(5)  # noqa: S311
    query = await a_vector(pool, tenant_a)
    await pool.execute(INSERT_DOCUMENT, noise, "noise")
    await pool.executemany(
        INSERT_NOISE_CHUNK, [(noise, f"noise-{i}", i, near(query, rng)) for i in range(400)]
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            exact = [
                r["chunk_id"]
                for r in await conn.fetch(
                    "SELECT chunk_id FROM kb_chunks WHERE tenant_id = $1 ORDER BY embedding <=> $2 LIMIT 5",
                    tenant_a,
                    query,
                )
            ]
            await conn.execute("SET LOCAL enable_sort = off")  # make the planner use the HNSW index
            await conn.execute("SET LOCAL enable_seqscan = off")
            args = (tenant_a, query, 5, None)
            plan_text = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + store.SEARCH_SQL, *args))
            assert "kb_chunks_embedding_hnsw" in plan_text
            # without iterative scans the filter starves the candidate list
            await conn.execute("SELECT set_config('hnsw.iterative_scan', 'off', true)")
            assert len(await conn.fetch(store.SEARCH_SQL, *args)) < 5
            found = await store.search_in_transaction(conn, tenant_a, query, k=5)
            assert await conn.fetchval("SELECT current_setting('hnsw.iterative_scan')") == "relaxed_order"
        assert [c.chunk_id for c in found] == exact
    finally:
        await pool.execute("DELETE FROM kb_documents WHERE tenant_id = $1", noise)


def test_quality_rejects_empty_oversized_duplicate_and_incomplete_chunks(folder: Path) -> None:
    good = chunk_document(extract(folder / "cap-outpatient.md"), "t")
    first = good[0]
    bad = [
        dataclasses.replace(good[1], text="  "),
        dataclasses.replace(good[2], text=" ".join(["word"] * (MAX_WORDS + 1))),
        dataclasses.replace(first, chunk_id=first.chunk_id + "-copy"),
        dataclasses.replace(good[3], source_organization=""),
        dataclasses.replace(good[4], effective_date="2025-13-01"),
        dataclasses.replace(good[5], tenant_id="", section=""),
    ]
    report = validate([first, *bad])
    assert report.accepted == [first]
    reasons = {r.chunk_id: r.reason for r in report.rejected}
    assert reasons == {
        good[1].chunk_id: "empty",
        good[2].chunk_id: f"oversized ({MAX_WORDS + 1} words > {MAX_WORDS})",
        first.chunk_id + "-copy": f"duplicate of {first.chunk_id}",
        good[3].chunk_id: "missing metadata: source_organization",
        good[4].chunk_id: "invalid metadata: effective_date is not an ISO date",
        good[5].chunk_id: "missing metadata: tenant_id, section",
    }


QUALITY_DOC = """Document-Id: {doc_id}
Title: Quality Gate Test
Organization: Test
Effective-Date: 2025-01-01
Doc-Type: protocol
Version: 1

1 Notes

Follow the local antibiogram for every empiric antibiotic choice.

1 Notes

Follow the local antibiogram for every empiric antibiotic choice.

2 Appendix

N/A.
{dosing}"""


async def test_pipeline_reports_rejections_and_stores_only_what_passed(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    t = tenant()
    dosing = "\n3 Dosing\n\nGive gentamicin 5 mg/kg once daily and check a level at 6 to 14 hours.\n"
    (tmp_path / "mixed.txt").write_text(QUALITY_DOC.format(doc_id="mixed", dosing=dosing))
    (tmp_path / "hopeless.txt").write_text(QUALITY_DOC.format(doc_id="hopeless", dosing="").replace(
        "Follow the local antibiogram for every empiric antibiotic choice.", "See below."
    ))  # fmt: skip
    (tmp_path / "no-header.md").write_text("## 1 Scope\n\nSome text.\n")
    results: dict[str, DocumentResult] = {
        r.source_file: r for r in await ingest_files(pool, t, tmp_path, names(tmp_path))
    }
    mixed = results["mixed.txt"]
    assert (mixed.status, mixed.chunks_written) == ("inserted", 2)
    assert {(r.chunk_id, r.reason) for r in mixed.rejected} == {
        ("mixed@v1#1/2", "duplicate of mixed@v1#1/1"),
        ("mixed@v1#2/1", "empty"),
    }
    hopeless = results["hopeless.txt"]
    assert (hopeless.status, hopeless.error) == ("rejected", "no chunk passed the quality checks")
    no_header = results["no-header.md"]
    assert no_header.status == "rejected" and no_header.document_id is None
    assert no_header.error is not None and no_header.error.startswith("missing header field(s): Document-Id")
    stored = await pool.fetch(
        "SELECT document_id, chunk_id FROM kb_chunks WHERE tenant_id = $1 ORDER BY 2", t
    )
    assert [(r["document_id"], r["chunk_id"]) for r in stored] == [
        ("mixed", "mixed@v1#1/1"),
        ("mixed", "mixed@v1#3/1"),
    ]
    assert await pool.fetchval("SELECT count(*) FROM kb_documents WHERE tenant_id = $1", t) == 1


async def test_two_files_with_one_document_id_do_not_overwrite_each_other(
    pool: asyncpg.Pool, folder: Path, tmp_path: Path
) -> None:
    t = tenant()
    shutil.copy(folder / "cap-outpatient.md", tmp_path / "cap-outpatient.md")
    copy = (folder / "cap-outpatient.md").read_text().replace("Review every patient", "Call every patient")
    (tmp_path / "cap-copy.md").write_text(copy)
    [first] = await ingest_files(pool, t, tmp_path, ["cap-outpatient.md"])
    assert first.status == "inserted"
    for _ in range(2):  # in a later batch, and again on the next run
        [second] = await ingest_files(pool, t, tmp_path, ["cap-copy.md"])
        assert (second.status, second.error) == (
            "rejected",
            "duplicate Document-Id (also in cap-outpatient.md)",
        )
    # in one batch
    both = await ingest_files(pool, tenant(), tmp_path, ["cap-copy.md", "cap-outpatient.md"])
    assert [(r.status, r.error) for r in both] == [
        ("inserted", None),
        ("rejected", "duplicate Document-Id (also in cap-copy.md)"),
    ]
    assert (
        await pool.fetchval(
            "SELECT source_file FROM kb_documents WHERE tenant_id = $1 AND document_id = 'cap-outpatient'", t
        )
        == "cap-outpatient.md"
    )
    # a renamed file (the old name gone) is an ordinary update
    (tmp_path / "cap-outpatient.md").unlink()
    [renamed] = await ingest_files(pool, t, tmp_path, ["cap-copy.md"])
    assert renamed.status == "replaced"
