"""Section-boundary chunking of an extracted document.

A chunk never crosses a section heading.  Within a section, paragraphs are packed up to
`max_words`; a recommendation (`Recommendation N.N.N ...`) or payer criterion (`Criterion N: ...`),
together with the list that follows it, is one unit that is never split.  Only an ordinary
paragraph longer than the limit is split, and only between sentences.

The limit is in words because the model's window is 256 word-piece tokens and clinical prose
(drug names, doses, abbreviations) runs at about 1.75 tokens per word with MiniLM's tokenizer: 100
body words plus the "Title — Section" context line stay inside the window (the starter KB's largest
chunk is ~245 tokens), so nothing is truncated away at embedding time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from careflow.kb.extract import ExtractedDocument

MAX_WORDS = 100
_HEADING = re.compile(r"^(\d{1,2}(?:\.\d{1,2}){0,3})\.?\s+([A-Z][^\n]{0,118})$")
_ATOMIC = re.compile(r"^(?:Recommendation\s+\d+(?:\.\d+)*|Criterion\s+\d+\s*:)", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^(?:[-*\u2022]\s+|\(?[a-z0-9]{1,2}[.)]\s+|\|)")
# Sentence end: . ! ? followed by space and a capital/digit/bracket; not after common abbreviations.
_SENTENCE_END = re.compile(
    r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bvs\.)(?<!\bDr\.)(?<!\bapprox\.)(?<!\bNo\.)(?<=[.!?])\s+(?=[A-Z0-9(\[])"
)


@dataclass(frozen=True)
class Chunk:
    chunk_id: str  # f"{document_id}@v{version}#{section_number}/{ordinal}"
    tenant_id: str
    document_id: str
    document_title: str
    source_organization: str
    section: str  # full heading, "3.1 Outpatient empiric therapy"
    section_number: str
    effective_date: str
    doc_type: str
    version: str
    ordinal: int  # position of the chunk in the document (0-based)
    text: str  # the chunk's own text, what a citation quotes
    embed_text: str  # "Title — Section" + text: what gets embedded
    content_hash: str  # sha256 of embed_text

    @property
    def word_count(self) -> int:
        return len(self.text.split())

    def metadata(self) -> dict[str, str]:
        return {
            "tenant_id": self.tenant_id,
            "source_organization": self.source_organization,
            "document_title": self.document_title,
            "section": self.section,
            "effective_date": self.effective_date,
            "doc_type": self.doc_type,
            "version": self.version,
            "content_hash": self.content_hash,
            "document_id": self.document_id,
            "chunk_id": self.chunk_id,
        }


@dataclass(frozen=True)
class Section:
    number: str  # "3.1"; "0" for text before the first numbered heading
    heading: str  # "3.1 Inpatient, non-severe pneumonia"
    paragraphs: list[str]


def heading_of(paragraph: str) -> tuple[str, str] | None:
    """(number, full heading) if the paragraph is a numbered heading like `3.1 Outpatient therapy`."""
    if "\n" in paragraph or paragraph.endswith((".", ":", ";")) or len(paragraph.split()) > 16:
        return None
    match = _HEADING.match(paragraph)
    if not match:
        return None
    return match.group(1), f"{match.group(1)} {match.group(2).strip()}"


def sections(doc: ExtractedDocument) -> list[Section]:
    out: list[Section] = []
    number, heading = "0", "Introduction"  # text before the first numbered heading
    body: list[str] = []
    for paragraph in doc.paragraphs:
        found = heading_of(paragraph)
        if found:
            out.append(Section(number, heading, body))
            (number, heading), body = found, []
        elif not (number == "0" and not body and paragraph.strip() == doc.header.title):
            body.append(paragraph)  # (a repeated title before the first heading is dropped)
    out.append(Section(number, heading, body))
    return [s for s in out if s.paragraphs]


def units(paragraphs: list[str]) -> list[tuple[str, bool]]:
    """Paragraphs grouped into (text, atomic) units: a recommendation or criterion, or any paragraph
    that introduces a list (ends with ':'), takes the list items that follow it."""
    out: list[tuple[str, bool]] = []
    for paragraph in paragraphs:
        is_item = bool(_LIST_ITEM.match(paragraph))
        if is_item and out and (out[-1][1] or out[-1][0].rstrip().endswith(":")):
            out[-1] = (out[-1][0] + "\n" + paragraph, True)
        else:
            atomic = bool(_ATOMIC.match(paragraph)) or "\n" in paragraph
            out.append((paragraph, atomic))
    return out


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _pieces(paragraphs: list[str], max_words: int) -> list[str]:
    """Units no longer than max_words where possible (atomic units and single sentences stay whole)."""
    pieces: list[str] = []
    for text, atomic in units(paragraphs):
        if atomic or len(text.split()) <= max_words:
            pieces.append(text)
            continue
        current: list[str] = []
        for sentence in split_sentences(text):
            if current and len(" ".join([*current, sentence]).split()) > max_words:
                pieces.append(" ".join(current))
                current = []
            current.append(sentence)
        if current:
            pieces.append(" ".join(current))
    return pieces


def _pack(pieces: list[str], max_words: int) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    words = 0
    for piece in pieces:
        n = len(piece.split())
        if current and words + n > max_words:
            chunks.append("\n".join(current))
            current, words = [], 0
        current.append(piece)
        words += n
    if current:
        chunks.append("\n".join(current))
    return chunks


def context_line(title: str, section: str) -> str:
    return f"{title} — {section}"


def chunk_document(doc: ExtractedDocument, tenant_id: str, max_words: int = MAX_WORDS) -> list[Chunk]:
    h = doc.header
    chunks: list[Chunk] = []
    per_section: dict[str, int] = {}  # a repeated section number continues its ordinals: ids stay unique
    for section in sections(doc):
        for text in _pack(_pieces(section.paragraphs, max_words), max_words):
            i = per_section[section.number] = per_section.get(section.number, 0) + 1
            embed_text = f"{context_line(h.title, section.heading)}\n{text}"
            chunks.append(
                Chunk(
                    chunk_id=f"{h.document_id}@v{h.version}#{section.number}/{i}",
                    tenant_id=tenant_id,
                    document_id=h.document_id,
                    document_title=h.title,
                    source_organization=h.organization,
                    section=section.heading,
                    section_number=section.number,
                    effective_date=h.effective_date,
                    doc_type=h.doc_type,
                    version=h.version,
                    ordinal=len(chunks),
                    text=text,
                    embed_text=embed_text,
                    content_hash=hashlib.sha256(embed_text.encode("utf-8")).hexdigest(),
                )
            )
    return chunks
