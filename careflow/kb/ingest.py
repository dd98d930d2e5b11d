"""The ingestion pipeline as plain async functions (the refresh workflow's activities call these).

plan:   list the folder's sources with their sha256; a source whose hash is already stored for the
        tenant is unchanged and is not even opened again.
ingest: per document extract -> chunk -> validate, then one embedding pass for the whole batch
        (embeddings of unchanged chunk texts are reused from the store), then one transaction per
        document (insert, swap, or nothing when the stored hash matches: safe to retry).
retire: documents whose source left the folder leave the store, with the cache entries citing them.
A document embedded by another model than this process's counts as changed and is embedded again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from careflow.kb import cache, store
from careflow.kb.chunker import Chunk, chunk_document
from careflow.kb.embed import Embedder, get_embedder
from careflow.kb.extract import SUPPORTED_SUFFIXES, ExtractedDocument, ExtractionError, extract, file_hash
from careflow.kb.quality import Rejection, validate

EMBED_BATCH = 64


@dataclass(frozen=True)
class SourceFile:
    name: str  # path relative to the folder, POSIX separators
    content_hash: str


@dataclass(frozen=True)
class Plan:
    sources: list[SourceFile]
    changed: list[SourceFile]  # new or modified: to ingest
    unchanged: list[SourceFile]
    chunks_unchanged: int  # chunks already stored for the unchanged sources


@dataclass
class DocumentResult:
    source_file: str
    document_id: str | None = None
    status: str = "rejected"  # inserted | replaced | unchanged | rejected
    chunks_written: int = 0
    chunks_unchanged: int = 0
    embeddings_reused: int = 0
    cache_invalidated: int = 0  # semantic-cache entries retired in the swap's transaction
    rejected: list[Rejection] = field(default_factory=list)  # chunks the quality gate refused
    error: str | None = None  # why the whole document was rejected


def _safe_path(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ExtractionError(name, "outside the source folder")
    return path


def discover(folder: Path) -> list[SourceFile]:
    """Supported files under the folder (hidden ones skipped), sorted by name, with their hashes."""
    if not folder.is_dir():
        raise ExtractionError(str(folder), "source folder not found")
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.suffix.lower() not in SUPPORTED_SUFFIXES or any(p.startswith(".") for p in rel.parts):
            continue
        if path.is_file():
            found.append(SourceFile(rel.as_posix(), file_hash(path.read_bytes())))
    return found


async def plan(pool: asyncpg.Pool, tenant_id: str, folder: Path) -> Plan:
    sources = await asyncio.to_thread(discover, folder)
    # A source embedded by another model is re-embedded: its stored vectors are not comparable.
    stored = {
        d.content_hash: d.chunk_count for d in await store.stored_documents(pool, tenant_id) if d.current
    }
    changed = [s for s in sources if s.content_hash not in stored]
    unchanged = [s for s in sources if s.content_hash in stored]
    return Plan(sources, changed, unchanged, sum(stored[s.content_hash] for s in unchanged))


@dataclass
class _Prepared:
    result: DocumentResult
    doc: ExtractedDocument | None = None
    chunks: list[Chunk] = field(default_factory=list)


def _prepare(folder: Path, name: str, tenant_id: str) -> _Prepared:
    result = DocumentResult(source_file=name)
    try:
        doc = extract(_safe_path(folder, name), name)
    except ExtractionError as exc:
        result.error = exc.reason
        return _Prepared(result)
    result.document_id = doc.header.document_id
    report = validate(chunk_document(doc, tenant_id))
    result.rejected = report.rejected
    if not report.accepted:
        result.error = "no chunk passed the quality checks"
        return _Prepared(result)
    return _Prepared(result, doc, report.accepted)


def source_root(folder: Path) -> str:
    """How the store names a source folder: its absolute path."""
    return str(folder.resolve())


def _record(doc: ExtractedDocument, tenant_id: str, folder: Path) -> store.DocumentRecord:
    h = doc.header
    return store.DocumentRecord(
        tenant_id=tenant_id,
        document_id=h.document_id,
        title=h.title,
        source_organization=h.organization,
        effective_date=h.effective_date,
        doc_type=h.doc_type,
        version=h.version,
        content_hash=doc.content_hash,
        source_file=doc.source,
        source_root=source_root(folder),
    )


async def ingest_files(
    pool: asyncpg.Pool,
    tenant_id: str,
    folder: Path,
    names: Sequence[str],
    *,
    embedder: Embedder | None = None,
    embed_batch_size: int = EMBED_BATCH,
    on_document: Callable[[DocumentResult], Awaitable[None] | None] | None = None,
) -> list[DocumentResult]:
    """Ingest these files of the folder; one result per file, in order."""
    embedder = embedder or get_embedder()
    prepared = [await asyncio.to_thread(_prepare, folder, name, tenant_id) for name in names]
    _reject_duplicate_ids(prepared)

    # Skip documents already stored with this hash (a retried batch), before spending any embedding.
    ids = [p.doc.header.document_id for p in prepared if p.doc is not None]
    stored = {d.document_id: d for d in await store.stored_documents(pool, tenant_id, ids)}
    for p in prepared:
        if p.doc is None or (s := stored.get(p.doc.header.document_id)) is None:
            continue
        if s.content_hash == p.doc.content_hash and s.current:
            p.result.status, p.result.chunks_unchanged = "unchanged", s.chunk_count
            p.doc = None
        elif s.source_file != p.result.source_file and (folder / s.source_file).is_file():
            # Two files claim one Document-Id: each run would swap one for the other.  A renamed
            # file (the old name gone) is an ordinary update.
            p.result.error = f"duplicate Document-Id (also in {s.source_file})"
            p.doc, p.chunks = None, []

    to_write = [p for p in prepared if p.doc is not None]
    reused = await store.stored_embeddings(
        pool, tenant_id, sorted({c.content_hash for p in to_write for c in p.chunks})
    )
    missing = sorted(
        {
            c.content_hash: c.embed_text for p in to_write for c in p.chunks if c.content_hash not in reused
        }.items()
    )
    fresh = await embedder.aencode([text for _, text in missing], batch_size=embed_batch_size)
    vectors = {**reused, **{h: v for (h, _), v in zip(missing, fresh, strict=True)}}

    for p in prepared:
        if p.doc is not None:
            outcome = await store.upsert_document(
                pool,
                _record(p.doc, tenant_id, folder),
                p.chunks,
                [vectors[c.content_hash] for c in p.chunks],
                on_replace=functools.partial(
                    _invalidate, tenant_id=tenant_id, document_id=p.doc.header.document_id
                ),
            )
            p.result.status = outcome.status
            p.result.chunks_written = outcome.chunks_written
            p.result.cache_invalidated = outcome.cache_invalidated
            p.result.embeddings_reused = sum(1 for c in p.chunks if c.content_hash in reused)
        if on_document is not None:
            maybe = on_document(p.result)
            if maybe is not None:
                await maybe
    return [p.result for p in prepared]


async def _invalidate(conn: asyncpg.Connection, *, tenant_id: str, document_id: str) -> int:
    return await cache.invalidate_documents(conn, tenant_id, [document_id])


def _reject_duplicate_ids(prepared: list[_Prepared]) -> None:
    seen: dict[str, str] = {}
    for p in prepared:
        if p.doc is None:
            continue
        first = seen.setdefault(p.doc.header.document_id, p.result.source_file)
        if first != p.result.source_file:
            p.result.error = f"duplicate Document-Id (also in {first})"
            p.result.status, p.doc, p.chunks = "rejected", None, []


async def retire_missing(
    pool: asyncpg.Pool, tenant_id: str, folder: Path, ingested_document_ids: Sequence[str]
) -> tuple[list[store.RetiredDocument], int]:
    """Retire the documents whose source left the folder (see store.retire_missing).  A folder with
    no sources at all retires nothing: an empty or unmounted folder must not empty the knowledge base."""
    sources = await asyncio.to_thread(discover, folder)
    if not sources:
        return [], 0
    return await store.retire_missing(
        pool,
        tenant_id,
        source_root(folder),
        [s.name for s in sources],
        [s.content_hash for s in sources],
        ingested_document_ids,
        on_retire=lambda conn, ids: cache.invalidate_documents(conn, tenant_id, ids),
    )
