"""The knowledge base in Postgres: documents and chunks with pgvector embeddings (migration 0008).

Every statement filters by tenant itself (the dev pool is a superuser, which bypasses RLS) and runs in
a transaction that names the tenant with `set_config('careflow.tenant_id', …, true)` (SET LOCAL), so
row-level security holds the application role to that tenant as well.  Pooled connections carry no
session state.

Writes are per document and atomic: an updated document's old chunks are deleted and the new ones
inserted in one transaction, so a reader sees either the old version or the new one.  A document
whose source hash is unchanged writes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date

import asyncpg

from careflow.kb.chunker import Chunk
from careflow.kb.embed import MODEL_NAME, get_embedder
from careflow.llm.types import Evidence

# ANN candidates per scan; iterative scans fetch more until the tenant/doc-type filter yields k rows.
EF_SEARCH = 100


@dataclass(frozen=True)
class RetrievedChunk:
    chunk_id: str  # stable: f"{document_id}@v{version}#{section_number}/{ordinal}"
    document_id: str
    document_title: str
    section: str  # full heading, e.g. "3.1 Outpatient empiric therapy"
    effective_date: str  # ISO date
    source_organization: str
    doc_type: str
    version: str
    text: str
    score: float  # cosine similarity, 1.0 = identical


@dataclass(frozen=True)
class DocumentRecord:
    tenant_id: str
    document_id: str
    title: str
    source_organization: str
    effective_date: str
    doc_type: str
    version: str
    content_hash: str  # sha256 of the source file
    source_file: str
    source_root: str | None = None  # the folder ingested (absolute): where retire_missing looks


@dataclass(frozen=True)
class StoredDocument:
    document_id: str
    content_hash: str
    source_file: str
    chunk_count: int
    embedding_model: str

    @property
    def current(self) -> bool:
        """Embedded by this process's model: vectors from another model are not comparable."""
        return self.embedding_model == MODEL_NAME


@dataclass(frozen=True)
class RetiredDocument:
    document_id: str
    version: str
    source_file: str
    chunk_count: int


@dataclass(frozen=True)
class UpsertResult:
    document_id: str
    status: str  # "inserted" | "replaced" | "unchanged"
    chunks_written: int
    chunks_deleted: int
    cache_invalidated: int = 0


async def _scope(conn: asyncpg.Connection, tenant_id: str, *, search: bool = False) -> None:
    """SET LOCAL the tenant (for RLS) and, for searches, the HNSW scan settings: one round trip."""
    if search:
        await conn.execute(
            "SELECT set_config('careflow.tenant_id', $1, true),"
            " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
            " set_config('hnsw.ef_search', $2, true)",
            tenant_id,
            str(EF_SEARCH),
        )
    else:
        await conn.execute("SELECT set_config('careflow.tenant_id', $1, true)", tenant_id)


# -- writes ---------------------------------------------------------------------------------------
_UPSERT_DOCUMENT = """
INSERT INTO kb_documents (tenant_id, document_id, title, source_organization, effective_date, doc_type,
                          version, content_hash, source_file, chunk_count, embedding_model, source_root)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (tenant_id, document_id) DO UPDATE SET
    title = EXCLUDED.title, source_organization = EXCLUDED.source_organization,
    effective_date = EXCLUDED.effective_date, doc_type = EXCLUDED.doc_type, version = EXCLUDED.version,
    content_hash = EXCLUDED.content_hash, source_file = EXCLUDED.source_file,
    chunk_count = EXCLUDED.chunk_count, embedding_model = EXCLUDED.embedding_model,
    source_root = coalesce(EXCLUDED.source_root, kb_documents.source_root), updated_at = now()
"""
_INSERT_CHUNK = """
INSERT INTO kb_chunks (tenant_id, chunk_id, document_id, ordinal, section, section_number, document_title,
                       source_organization, effective_date, doc_type, version, text, content_hash, embedding)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
"""


async def upsert_document(
    pool: asyncpg.Pool,
    doc: DocumentRecord,
    chunks: Sequence[Chunk],
    vectors: Sequence[Sequence[float]],
    on_replace: Callable[[asyncpg.Connection], Awaitable[int]] | None = None,
) -> UpsertResult:
    """Insert a new document, swap an updated one's chunks in one transaction, or write nothing.

    `on_replace(conn)` runs inside the swap's transaction when an existing document changes (the
    semantic cache retires the answers citing it, committed together with the new chunks)."""
    if len(chunks) != len(vectors):
        raise ValueError("one vector per chunk")
    if any(c.tenant_id != doc.tenant_id or c.document_id != doc.document_id for c in chunks):
        raise ValueError("every chunk must belong to the document and its tenant")
    async with pool.acquire() as conn, conn.transaction():
        await _scope(conn, doc.tenant_id)
        # Two writers of the same document (an overlapping manual run and the nightly schedule) queue.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"kb:{doc.tenant_id}:{doc.document_id}"
        )
        stored = await conn.fetchrow(
            "SELECT content_hash, embedding_model FROM kb_documents"
            " WHERE tenant_id = $1 AND document_id = $2",
            doc.tenant_id,
            doc.document_id,
        )
        current = stored["content_hash"] if stored else None
        if current == doc.content_hash and stored["embedding_model"] == MODEL_NAME:
            return UpsertResult(doc.document_id, "unchanged", 0, 0)
        invalidated = await on_replace(conn) if on_replace is not None and current is not None else 0
        status = await conn.execute(
            "DELETE FROM kb_chunks WHERE tenant_id = $1 AND document_id = $2", doc.tenant_id, doc.document_id
        )
        deleted = int(status.split()[-1])
        await conn.execute(
            _UPSERT_DOCUMENT,
            doc.tenant_id,
            doc.document_id,
            doc.title,
            doc.source_organization,
            date.fromisoformat(doc.effective_date),
            doc.doc_type,
            doc.version,
            doc.content_hash,
            doc.source_file,
            len(chunks),
            MODEL_NAME,
            doc.source_root,
        )
        await conn.executemany(
            _INSERT_CHUNK,
            [
                (
                    c.tenant_id,
                    c.chunk_id,
                    c.document_id,
                    c.ordinal,
                    c.section,
                    c.section_number,
                    c.document_title,
                    c.source_organization,
                    date.fromisoformat(c.effective_date),
                    c.doc_type,
                    c.version,
                    c.text,
                    c.content_hash,
                    list(v),
                )
                for c, v in zip(chunks, vectors, strict=True)
            ],
        )
    status = "inserted" if current is None else "replaced"
    return UpsertResult(doc.document_id, status, len(chunks), deleted, invalidated)


# -- reads used by ingestion ----------------------------------------------------------------------
async def stored_documents(
    pool: asyncpg.Pool, tenant_id: str, document_ids: Sequence[str] | None = None
) -> list[StoredDocument]:
    """The tenant's stored documents (or just these ones) with their source hashes."""
    async with pool.acquire() as conn, conn.transaction():
        await _scope(conn, tenant_id)
        rows = await conn.fetch(
            "SELECT document_id, content_hash, source_file, chunk_count, embedding_model FROM kb_documents"
            " WHERE tenant_id = $1 AND ($2::text[] IS NULL OR document_id = ANY($2::text[]))",
            tenant_id,
            list(document_ids) if document_ids is not None else None,
        )
    return [
        StoredDocument(
            r["document_id"], r["content_hash"], r["source_file"], r["chunk_count"], r["embedding_model"]
        )
        for r in rows
    ]


async def stored_embeddings(
    pool: asyncpg.Pool, tenant_id: str, content_hashes: Sequence[str]
) -> dict[str, list[float]]:
    """Embeddings already computed for these chunk texts: an updated document re-embeds only what changed."""
    if not content_hashes:
        return {}
    async with pool.acquire() as conn, conn.transaction():
        await _scope(conn, tenant_id)
        rows = await conn.fetch(
            "SELECT DISTINCT ON (c.content_hash) c.content_hash, c.embedding FROM kb_chunks c"
            " JOIN kb_documents d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id"
            " WHERE c.tenant_id = $1 AND c.content_hash = ANY($2::text[]) AND d.embedding_model = $3",
            tenant_id,
            list(content_hashes),
            MODEL_NAME,
        )
    return {r["content_hash"]: r["embedding"].to_list() for r in rows}


async def retire_missing(
    pool: asyncpg.Pool,
    tenant_id: str,
    source_root: str,
    present_files: Sequence[str],
    present_hashes: Sequence[str],
    keep_document_ids: Sequence[str] = (),
    on_retire: Callable[[asyncpg.Connection, list[str]], Awaitable[int]] | None = None,
) -> tuple[list[RetiredDocument], int]:
    """Retire the folder's documents whose source is gone: neither their file name nor their content
    is in the folder any more, and this refresh did not ingest them.  One transaction: the documents
    and their chunks leave the store, a row per document goes to kb_retired_documents, and
    `on_retire(conn, ids)` (the semantic cache) runs.  Documents of this tenant without a folder
    (ingested before migration 0013) whose content is here are adopted first.  Returns the retired
    documents and what `on_retire` returned."""
    async with pool.acquire() as conn, conn.transaction():
        await _scope(conn, tenant_id)
        # By content only: another folder may hold a file of the same name.  (A changed file is
        # re-ingested, and that write records its folder.)
        await conn.execute(
            "UPDATE kb_documents SET source_root = $2 WHERE tenant_id = $1 AND source_root IS NULL"
            " AND content_hash = ANY($3::text[])",
            tenant_id,
            source_root,
            list(present_hashes),
        )
        rows = await conn.fetch(
            """DELETE FROM kb_documents
                WHERE tenant_id = $1 AND source_root = $2
                  AND NOT (source_file = ANY($3::text[]) OR content_hash = ANY($4::text[])
                           OR document_id = ANY($5::text[]))
            RETURNING document_id, version, title, doc_type, source_file, content_hash, chunk_count""",
            tenant_id,
            source_root,
            list(present_files),
            list(present_hashes),
            list(keep_document_ids),
        )
        if not rows:
            return [], 0
        await conn.executemany(
            """INSERT INTO kb_retired_documents (tenant_id, document_id, version, title, doc_type,
                   source_root, source_file, content_hash, chunk_count, reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'source file removed')""",
            [
                (
                    tenant_id,
                    r["document_id"],
                    r["version"],
                    r["title"],
                    r["doc_type"],
                    source_root,
                    r["source_file"],
                    r["content_hash"],
                    r["chunk_count"],
                )
                for r in rows
            ],
        )
        ids = [r["document_id"] for r in rows]
        followed = await on_retire(conn, ids) if on_retire is not None else 0
    retired = [
        RetiredDocument(r["document_id"], r["version"], r["source_file"], r["chunk_count"]) for r in rows
    ]
    return retired, followed


@dataclass(frozen=True)
class KbStats:
    documents: int
    chunks: int
    by_doc_type: dict[str, tuple[int, int]]  # doc type -> (documents, chunks)
    last_updated: str | None


async def stats(pool: asyncpg.Pool, tenant_id: str) -> KbStats:
    async with pool.acquire() as conn, conn.transaction():
        await _scope(conn, tenant_id)
        rows = await conn.fetch(
            "SELECT doc_type, count(*) AS documents, sum(chunk_count) AS chunks, max(updated_at) AS last"
            " FROM kb_documents WHERE tenant_id = $1 GROUP BY doc_type ORDER BY doc_type",
            tenant_id,
        )
    by_type = {r["doc_type"]: (int(r["documents"]), int(r["chunks"])) for r in rows}
    last = max((r["last"] for r in rows), default=None)
    return KbStats(
        documents=sum(d for d, _ in by_type.values()),
        chunks=sum(c for _, c in by_type.values()),
        by_doc_type=by_type,
        last_updated=last.isoformat() if last else None,
    )


# -- retrieval (the contract other modules call) ------------------------------------------------------
SEARCH_SQL = """
WITH nearest AS MATERIALIZED (
    SELECT chunk_id, document_id, document_title, section, effective_date, source_organization, doc_type,
           version, text, embedding <=> $2 AS distance
    FROM kb_chunks
    WHERE tenant_id = $1 AND ($4::text[] IS NULL OR doc_type = ANY($4::text[]))
    ORDER BY embedding <=> $2
    LIMIT $3
)
SELECT * FROM nearest ORDER BY distance
"""
# (relaxed_order may return the scan's rows slightly out of order: the outer ORDER BY restores it)


async def search(
    pool: asyncpg.Pool,
    tenant_id: str,
    vector: list[float],
    k: int = 5,
    doc_types: Sequence[str] | None = None,
) -> list[RetrievedChunk]:
    """HNSW cosine ANN within one tenant (and optionally some doc types)."""
    async with pool.acquire() as conn, conn.transaction():
        return await search_in_transaction(conn, tenant_id, vector, k, doc_types)


async def search_in_transaction(
    conn: asyncpg.Connection,
    tenant_id: str,
    vector: list[float],
    k: int = 5,
    doc_types: Sequence[str] | None = None,
) -> list[RetrievedChunk]:
    """`search` on a connection the caller holds in a transaction (the settings are SET LOCAL)."""
    await _scope(conn, tenant_id, search=True)
    rows = await conn.fetch(SEARCH_SQL, tenant_id, vector, k, list(doc_types) if doc_types else None)
    return [
        RetrievedChunk(
            chunk_id=r["chunk_id"],
            document_id=r["document_id"],
            document_title=r["document_title"],
            section=r["section"],
            effective_date=r["effective_date"].isoformat(),
            source_organization=r["source_organization"],
            doc_type=r["doc_type"],
            version=r["version"],
            text=r["text"],
            score=1.0 - float(r["distance"]),
        )
        for r in rows
    ]


async def retrieve(
    pool: asyncpg.Pool,
    tenant_id: str,
    query: str,
    k: int = 5,
    doc_types: Sequence[str] | None = None,
) -> list[RetrievedChunk]:
    [vector] = await get_embedder().aencode([query])
    return await search(pool, tenant_id, vector, k, doc_types)


def as_evidence(chunk: RetrievedChunk) -> Evidence:
    return Evidence(
        id=f"kb:{chunk.chunk_id}",
        kind=chunk.doc_type,
        title=f"{chunk.document_title} — {chunk.section} (effective {chunk.effective_date})",
        text=chunk.text,
    )
