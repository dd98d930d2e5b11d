"""Knowledge-base query latency (seed P1/P13: an answer with citations in <= 3 s end to end).

Starts its own embedded Postgres, ingests the starter knowledge base, then builds a second tenant of
~50,000 chunks: the starter chunks plus synthetic documents (careflow/kb/synthetic.py) chunked by the real
chunker.  Embedding 50k chunks on a laptop CPU takes minutes, so a sample of the synthetic chunk texts is
embedded and every synthetic chunk gets a sample vector plus small noise (re-normalised): the HNSW index
then holds 50k distinct, realistic vectors.  Per tenant it measures `RagService.answer` (embed, cache
lookup, hybrid retrieval, gateway `rag_answer` on the offline provider, validation, cache store, audit):

- cache miss: each golden-set question asked once on an empty cache;
- cache hit: the same questions asked again;
and recall@5 / MRR of the golden set at that size.  Figures are printed with their ratio to the SLA.

    .venv/bin/python -m bench.rag_bench [--chunks 50000] [--sample 1000] [--queries 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from datetime import date
from pathlib import Path

import asyncpg

from careflow.config import Settings
from careflow.db.embedded import throwaway_postgres
from careflow.db.migrate import migrate
from careflow.db.pool import create_pool
from careflow.kb import evaluation as ev
from careflow.kb import ingest
from careflow.kb.chunker import chunk_document
from careflow.kb.embed import MODEL_NAME, get_embedder
from careflow.kb.extract import extract_bytes, file_hash
from careflow.kb.rag import NoEvidence, RagService
from careflow.kb.settings import KbSettings
from careflow.kb.synthetic import generate_documents
from careflow.llm.gateway import Gateway

SLA_S = 3.0
ROOT = Path(__file__).resolve().parent.parent
STARTER = ROOT / "careflow" / "kb" / "starter"
NOISE = 0.08  # per-dimension noise on a reused sample vector (unit vectors: |noise| ~ 1.6)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, ms: list[float]) -> None:
    p50, p95 = pct(ms, 0.5), pct(ms, 0.95)
    print(
        f"  {name:<26} n={len(ms):<4} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   "
        f"p95/SLA {p95 / 1000 / SLA_S:6.3f}   (mean {statistics.fmean(ms):.1f} ms)"
    )


async def copy_tenant(pool: asyncpg.Pool, source: str, target: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO kb_documents SELECT $2, document_id, title, source_organization, effective_date,
                      doc_type, version, content_hash, source_file, chunk_count, embedding_model, ingested_at,
                      updated_at FROM kb_documents WHERE tenant_id = $1""",
            source,
            target,
        )
        await conn.execute(
            """INSERT INTO kb_chunks SELECT $2, chunk_id, document_id, ordinal, section, section_number,
                      document_title, source_organization, effective_date, doc_type, version, text,
                      content_hash, embedding FROM kb_chunks WHERE tenant_id = $1""",
            source,
            target,
        )


async def add_synthetic(
    pool: asyncpg.Pool, tenant: str, target_chunks: int, sample: int
) -> tuple[int, float]:
    """Synthetic chunks up to target_chunks; returns (chunks, embedding texts/s of the sample)."""
    rng = random.Random(7)
    documents, chunks = [], []
    for doc in generate_documents(10**6, seed=11, pages_per_doc=1):
        extracted = extract_bytes(doc.text.encode(), doc.filename)
        doc_chunks = chunk_document(extracted, tenant)
        documents.append((extracted, len(doc_chunks)))
        chunks.extend(doc_chunks)
        if len(chunks) >= target_chunks:
            break
    chunks = chunks[:target_chunks]
    texts = [c.embed_text for c in rng.sample(chunks, min(sample, len(chunks)))]
    started = time.perf_counter()
    base = await get_embedder().aencode(texts)
    embed_rate = len(texts) / (time.perf_counter() - started)

    def vector() -> list[float]:
        v = [x + rng.gauss(0, NOISE / 19.6) for x in rng.choice(base)]  # 19.6 = sqrt(384)
        norm = sum(x * x for x in v) ** 0.5
        return [x / norm for x in v]

    kept = {c.document_id for c in chunks}
    doc_rows = [
        (tenant, d.header.document_id, d.header.title, d.header.organization,
         date.fromisoformat(d.header.effective_date), d.header.doc_type, d.header.version,
         d.content_hash or file_hash(d.text.encode()), d.source, n, MODEL_NAME)
        for d, n in documents if d.header.document_id in kept
    ]  # fmt: skip
    chunk_rows = [
        (tenant, c.chunk_id, c.document_id, c.ordinal, c.section, c.section_number, c.document_title,
         c.source_organization, date.fromisoformat(c.effective_date), c.doc_type, c.version, c.text,
         c.content_hash, vector())
        for c in chunks
    ]  # fmt: skip
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "kb_documents",
            records=doc_rows,
            columns=["tenant_id", "document_id", "title", "source_organization", "effective_date", "doc_type",
                     "version", "content_hash", "source_file", "chunk_count", "embedding_model"],
        )  # fmt: skip
        started = time.perf_counter()
        for i in range(0, len(chunk_rows), 5000):
            await conn.executemany(
                """INSERT INTO kb_chunks (tenant_id, chunk_id, document_id, ordinal, section, section_number,
                          document_title, source_organization, effective_date, doc_type, version, text,
                          content_hash, embedding)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
                chunk_rows[i : i + 5000],
            )
        took = time.perf_counter() - started
        print(f"  inserted {len(chunk_rows)} synthetic chunks (HNSW index maintained) in {took:.1f} s")
    return len(chunks), embed_rate


async def measure(service: RagService, tenant: str, questions: list[str]) -> None:
    async with service.pool.acquire() as conn:
        await conn.execute("DELETE FROM kb_answer_cache WHERE tenant_id = $1", tenant)
    miss, hit, answered, unanswered = [], [], [], 0
    for q in questions:
        started = time.perf_counter()
        try:
            r = await service.answer(q, tenant, actor="bench")
        except NoEvidence:  # the offline drafter found no passage sharing the question's terms
            unanswered += 1
            miss.append((time.perf_counter() - started) * 1000)
            continue
        assert not r.cached and r.citations
        miss.append(r.latency_ms)
        answered.append(q)
    for q in answered:
        r = await service.answer(q, tenant, actor="bench")
        assert r.cached
        hit.append(r.latency_ms)
    line("cache miss (offline LLM)", miss)
    line("cache hit", hit)
    if unanswered:
        print(f"  ({unanswered} of {len(questions)} questions: no cited answer, NoEvidence, timed as misses)")


async def run(dsn: str, args: argparse.Namespace) -> None:
    os.environ["CAREFLOW_DATABASE_URL"] = dsn
    settings = Settings()
    pool = await create_pool(settings)
    try:
        embedder = get_embedder()
        started = time.perf_counter()
        embedder.warm()
        print(f"model load {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        names = [s.name for s in ingest.discover(STARTER)]
        results = await ingest.ingest_files(pool, "default", STARTER, names)
        took = time.perf_counter() - started
        starter_chunks = sum(r.chunks_written for r in results)
        print(
            f"starter KB: {len(results)} documents, {starter_chunks} chunks ingested in {took:.1f} s "
            f"({starter_chunks / took:.1f} chunks/s incl. extraction and embedding)"
        )
        service = RagService(pool, Gateway.from_settings(pool, settings), settings=KbSettings())
        golden = ev.load_golden()
        questions = [item.question for item in golden][: args.queries]
        await service.answer(questions[0], "default")  # warm: first gateway call, first HNSW pages

        print(f"\n[starter KB: {starter_chunks} chunks]  SLA {SLA_S:.0f} s end to end")
        await measure(service, "default", questions)
        report = await ev.evaluate_retrieval(pool, golden, tenant_id="default")
        print(f"  golden set: recall@5 {report.recall_at_k:.3f}  MRR {report.mrr:.3f}")

        scale = "scale"
        await copy_tenant(pool, "default", scale)
        added, rate = await add_synthetic(pool, scale, args.chunks - starter_chunks, args.sample)
        total = added + starter_chunks
        print(f"  embedding throughput: {rate:.1f} texts/s ({args.sample} synthetic chunk texts, CPU)")
        async with pool.acquire() as conn:
            await conn.execute("ANALYZE kb_chunks")
        await service.answer(questions[1], scale)
        print(f"\n[{total} chunks: starter + synthetic]  SLA {SLA_S:.0f} s end to end")
        await measure(service, scale, questions)
        report = await ev.evaluate_retrieval(pool, golden, tenant_id=scale)
        print(
            f"  golden set: recall@5 {report.recall_at_k:.3f}  MRR {report.mrr:.3f}  (a stress figure: the "
            "synthetic chunks share the starter topics and each reused vector has ~50 near-copies)"
        )

        # The starter tenant again, now a small tenant inside an HNSW index of 50k rows: the tenant
        # filter with hnsw.iterative_scan must keep its recall and latency.
        print(f"\n[starter KB tenant, filtered out of an index of {total + starter_chunks} chunks]")
        await measure(service, "default", questions)
        report = await ev.evaluate_retrieval(pool, golden, tenant_id="default")
        print(f"  golden set: recall@5 {report.recall_at_k:.3f}  MRR {report.mrr:.3f}")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=50_000)
    parser.add_argument("--sample", type=int, default=1000, help="synthetic chunk texts actually embedded")
    parser.add_argument("--queries", type=int, default=60)
    args = parser.parse_args()
    asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> None:
    async with throwaway_postgres("careflow-rag-bench-", "rag_bench") as (_, dsn):
        await migrate(dsn)
        await run(dsn, args)


if __name__ == "__main__":
    main()
