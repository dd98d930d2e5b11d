"""Quality gate between chunking and embedding: what fails here is reported, never stored.

Rejected: empty chunks (too few words to mean anything), oversized chunks (an atomic recommendation
far beyond the embedding window, which would be retrieved by its first half only), duplicates (the
same embedded text twice in one document, or the same id), and chunks missing any metadata field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from careflow.kb.chunker import Chunk
from careflow.kb.extract import DOC_TYPES

MIN_WORDS = 3
MAX_WORDS = 300  # hard limit; the chunker targets 100, only unsplittable units come near this
REQUIRED_METADATA = (
    "tenant_id",
    "source_organization",
    "document_title",
    "section",
    "effective_date",
    "doc_type",
    "version",
    "content_hash",
    "document_id",
    "chunk_id",
)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Rejection:
    chunk_id: str
    document_id: str
    reason: str  # "empty" | "oversized (N words)" | "duplicate of <chunk id>" | "missing metadata: ..."


@dataclass
class QualityReport:
    accepted: list[Chunk] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def problems(chunk: Chunk) -> list[str]:
    """What is wrong with one chunk on its own (duplicates need the others: see validate)."""
    found = []
    meta = chunk.metadata()
    missing = [k for k in REQUIRED_METADATA if not str(meta.get(k) or "").strip()]
    if missing:
        found.append("missing metadata: " + ", ".join(missing))
    if chunk.effective_date and not _iso_date(chunk.effective_date):
        found.append("invalid metadata: effective_date is not an ISO date")
    if chunk.doc_type and chunk.doc_type not in DOC_TYPES:
        found.append("invalid metadata: doc_type")
    words = len(_WORD.findall(chunk.text))
    if words < MIN_WORDS:
        found.append("empty")
    elif words > MAX_WORDS:
        found.append(f"oversized ({words} words > {MAX_WORDS})")
    return found


def validate(chunks: Iterable[Chunk]) -> QualityReport:
    report = QualityReport()
    by_hash: dict[tuple[str, str], str] = {}
    ids: set[str] = set()
    for chunk in chunks:
        reasons = problems(chunk)
        first = by_hash.get((chunk.document_id, chunk.content_hash))
        if first is not None:
            reasons.append(f"duplicate of {first}")
        elif chunk.chunk_id in ids:
            reasons.append("duplicate chunk id")
        if reasons:
            report.rejected.append(Rejection(chunk.chunk_id, chunk.document_id, "; ".join(reasons)))
            continue
        by_hash[(chunk.document_id, chunk.content_hash)] = chunk.chunk_id
        ids.add(chunk.chunk_id)
        report.accepted.append(chunk)
    return report


def _iso_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True
