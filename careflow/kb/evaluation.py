"""Evaluation of the query path (`careflow kb eval`, tests/knowledge_base/test_kb_eval.py).

Golden set (careflow/kb/eval/golden_set.jsonl): one question per line with the sections that answer it,
`{"id", "question", "tenant_id", "expected": [{"document_id", "section"}]}`.
- recall@k: share of questions with an expected section among the top k retrieved chunks;
- section recall@k: share of all expected sections found in the top k (stricter with several expected);
- MRR: mean reciprocal rank of the first retrieved chunk from an expected section (0 when none);
- citation accuracy: share of answered questions whose answer cites an expected section.
A chunk matches an expected section when its section number equals it or lies below it ("3.1" is in "3").

Cache pairs (careflow/kb/eval/cache_pairs.jsonl): `{"id", "original", "candidate", "kind":
"paraphrase"|"distractor", "distractor_type"}`.  The original is cached, the candidate asked: a hit on a
paraphrase is wanted, a hit on a distractor is a false hit (a similar question with a different answer).
Each pair is decided by the cache's own rule (`cache.reusable`) on the embeddings the query path uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from careflow.kb.cache import reusable
from careflow.kb.clinical_terms import cache_key_text
from careflow.kb.embed import Embedder, get_embedder
from careflow.kb.rag import NoEvidence, RagError, RagService, query_text, retrieve
from careflow.kb.settings import KbSettings

EVAL_DIR = Path(__file__).resolve().parent / "eval"
GOLDEN_SET = EVAL_DIR / "golden_set.jsonl"
CACHE_PAIRS = EVAL_DIR / "cache_pairs.jsonl"
THRESHOLDS = (0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97)


@dataclass(frozen=True)
class GoldenItem:
    id: str
    question: str
    tenant_id: str
    expected: tuple[tuple[str, str], ...]  # (document_id, section number)


@dataclass(frozen=True)
class CachePair:
    id: str
    original: str
    candidate: str
    kind: str  # paraphrase | distractor
    distractor_type: str = ""


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_golden(path: Path = GOLDEN_SET) -> list[GoldenItem]:
    items = []
    for row in _jsonl(path):
        expected = row["expected"]
        assert isinstance(expected, list)
        items.append(
            GoldenItem(
                id=str(row["id"]),
                question=str(row["question"]),
                tenant_id=str(row.get("tenant_id") or "default"),
                expected=tuple((str(e["document_id"]), str(e["section"])) for e in expected),
            )
        )
    return items


def load_pairs(path: Path = CACHE_PAIRS) -> list[CachePair]:
    return [
        CachePair(
            id=str(row["id"]),
            original=str(row["original"]),
            candidate=str(row["candidate"]),
            kind=str(row["kind"]),
            distractor_type=str(row.get("distractor_type") or ""),
        )
        for row in _jsonl(path)
    ]


_SECTION_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)*)")


def section_number(section: str) -> str:
    m = _SECTION_NUMBER.match(section)
    return m.group(1) if m else section.strip()


def matches(expected: tuple[str, str], document_id: str, section: str) -> bool:
    want_doc, want_section = expected
    if document_id != want_doc:
        return False
    want, have = section_number(want_section), section_number(section)
    return have == want or have.startswith(want + ".")


# -- retrieval ----------------------------------------------------------------------------------------
@dataclass
class RetrievalReport:
    questions: int = 0
    recall_at_k: float = 0.0
    section_recall_at_k: float = 0.0
    mrr: float = 0.0
    k: int = 5
    misses: list[str] = field(default_factory=list)  # ids of questions with no expected section in top k


async def evaluate_retrieval(
    pool: asyncpg.Pool,
    items: Sequence[GoldenItem],
    *,
    settings: KbSettings | None = None,
    tenant_id: str | None = None,  # override the items' tenant (tests ingest into their own)
    embedder: Embedder | None = None,
) -> RetrievalReport:
    """Retrieval exactly as the query path does it (`rag.retrieve`)."""
    settings = settings or KbSettings()
    k = settings.top_k
    embedder = embedder or get_embedder()
    vectors = await embedder.aencode([query_text(i.question) for i in items])
    report = RetrievalReport(questions=len(items), k=k)
    found_any = found_sections = expected_total = 0
    reciprocal = 0.0
    for item, vector in zip(items, vectors, strict=True):
        chunks = await retrieve(pool, tenant_id or item.tenant_id, item.question, vector, settings)
        ranks = [
            rank
            for rank, c in enumerate(chunks, start=1)
            if any(matches(e, c.document_id, c.section) for e in item.expected)
        ]
        found_sections += sum(
            1 for e in item.expected if any(matches(e, c.document_id, c.section) for c in chunks)
        )
        expected_total += len(item.expected)
        if ranks:
            found_any += 1
            reciprocal += 1 / ranks[0]
        else:
            report.misses.append(item.id)
    if items:
        report.recall_at_k = found_any / len(items)
        report.section_recall_at_k = found_sections / max(expected_total, 1)
        report.mrr = reciprocal / len(items)
    return report


# -- answers ------------------------------------------------------------------------------------------
@dataclass
class AnswerReport:
    questions: int = 0
    answered: int = 0
    citation_accuracy: float = 0.0  # of the answered: an expected section among the citations
    mean_citations: float = 0.0
    unanswered: list[str] = field(default_factory=list)
    wrong_citations: list[str] = field(default_factory=list)


async def evaluate_answers(
    service: RagService, items: Sequence[GoldenItem], *, tenant_id: str | None = None
) -> AnswerReport:
    """Answer every question with the cache off (it measures generation, not reuse)."""
    report = AnswerReport(questions=len(items))
    correct = citations = 0
    for item in items:
        try:
            response = await service.answer(
                item.question, tenant_id or item.tenant_id, actor="careflow-kb-eval"
            )
        except (NoEvidence, RagError):
            report.unanswered.append(item.id)
            continue
        report.answered += 1
        citations += len(response.citations)
        if any(matches(e, c.document_id, c.section) for c in response.citations for e in item.expected):
            correct += 1
        else:
            report.wrong_citations.append(item.id)
    if report.answered:
        report.citation_accuracy = correct / report.answered
        report.mean_citations = citations / report.answered
    return report


# -- semantic cache -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheRow:
    threshold: float
    paraphrases: int
    hits: int  # paraphrases served from the cache
    distractors: int
    false_hits: int  # distractors served the original's answer
    similarity_only_false_hits: int  # what a threshold without the guard would have served

    @property
    def hit_rate(self) -> float:
        return self.hits / self.paraphrases if self.paraphrases else 0.0

    @property
    def false_hit_rate(self) -> float:
        return self.false_hits / self.distractors if self.distractors else 0.0

    @property
    def similarity_only_false_hit_rate(self) -> float:
        return self.similarity_only_false_hits / self.distractors if self.distractors else 0.0


@dataclass
class CacheReport:
    rows: list[CacheRow]
    false_hit_ids: dict[float, list[str]]  # threshold -> distractor pair ids that hit


def evaluate_cache(
    pairs: Sequence[CachePair], thresholds: Sequence[float] = THRESHOLDS, *, embedder: Embedder | None = None
) -> CacheReport:
    embedder = embedder or get_embedder()
    originals = embedder.encode([cache_key_text(p.original) for p in pairs])
    candidates = embedder.encode([cache_key_text(p.candidate) for p in pairs])
    similarity = [
        sum(a * b for a, b in zip(o, c, strict=True)) for o, c in zip(originals, candidates, strict=True)
    ]
    rows: list[CacheRow] = []
    false_ids: dict[float, list[str]] = {}
    for t in thresholds:
        hits = false_hits = naive = 0
        false_ids[t] = []
        for pair, s in zip(pairs, similarity, strict=True):
            reused = reusable(s, pair.candidate, pair.original, t)
            if pair.kind == "paraphrase":
                hits += reused
            else:
                false_hits += reused
                naive += s >= t
                if reused:
                    false_ids[t].append(pair.id)
        rows.append(
            CacheRow(
                threshold=t,
                paraphrases=sum(1 for p in pairs if p.kind == "paraphrase"),
                hits=hits,
                distractors=sum(1 for p in pairs if p.kind != "paraphrase"),
                false_hits=false_hits,
                similarity_only_false_hits=naive,
            )
        )
    return CacheReport(rows, false_ids)
