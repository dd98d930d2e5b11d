"""The starter knowledge base, its evaluation sets and the synthetic generator.

The starter documents are checked through the real ingestion reader (careflow.kb.extract) and
chunker, and the .docx/.pdf binaries also through python-docx and pypdf directly, so a header that
only survives our own reader would still fail here.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader

from careflow.kb import docwriter
from careflow.kb.chunker import MAX_WORDS, chunk_document, heading_of, sections
from careflow.kb.extract import DOC_TYPES, ExtractedDocument, extract, extract_bytes
from careflow.kb.synthetic import generate_documents, write_corpus

KB = Path(docwriter.__file__).resolve().parent
STARTER = KB / "starter"
EVAL = KB / "eval"
HEADER_KEYS = ("Document-Id", "Title", "Organization", "Effective-Date", "Doc-Type", "Version")
RECOMMENDATION = re.compile(r"^Recommendation (\d+\.\d+)\.\d+ \(([^)]+)\): \S")
CRITERION = re.compile(r"^Criterion (\d+): \S")


def _starter() -> list[ExtractedDocument]:
    return [extract(path) for path in sorted(STARTER.iterdir()) if not path.name.startswith(".")]


DOCS = _starter()
BY_ID = {doc.header.document_id: doc for doc in DOCS}


def _jsonl(name: str) -> list[dict[str, object]]:
    lines = (EVAL / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _section_numbers(doc: ExtractedDocument) -> set[str]:
    return {found[0] for p in doc.paragraphs if (found := heading_of(p))}


# -- starter corpus ---------------------------------------------------------------------------------
def test_starter_corpus_size_formats_and_unique_ids() -> None:
    formats = Counter(doc.format for doc in DOCS)
    assert len(DOCS) >= 42
    assert formats["md"] >= 20 and formats["txt"] >= 5 and formats["html"] >= 5
    assert formats["docx"] >= 4 and formats["pdf"] >= 4
    ids = [doc.header.document_id for doc in DOCS]
    assert len(set(ids)) == len(ids)
    assert {doc.header.doc_type for doc in DOCS} == set(DOC_TYPES)
    assert len({doc.header.organization for doc in DOCS}) >= 5
    assert len({doc.header.effective_date for doc in DOCS}) >= 20


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.source)
def test_starter_document_structure(doc: ExtractedDocument) -> None:
    words = len(doc.text.split())
    assert 400 <= words <= 1500, words
    numbers = _section_numbers(doc)
    assert "1" in numbers or "1.1" in numbers  # sections start at 1
    current = "0"
    recommendations = 0
    for paragraph in doc.paragraphs:
        if found := heading_of(paragraph):
            current = found[0]
        elif paragraph.startswith("Recommendation"):
            match = RECOMMENDATION.match(paragraph)
            assert match, paragraph[:60]
            assert match.group(1) == current, f"{paragraph[:30]} is under section {current}"
            recommendations += 1
    if doc.header.doc_type != "payer_policy":
        assert recommendations >= 3


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.source)
def test_recommendations_and_criteria_land_whole_in_one_chunk(doc: ExtractedDocument) -> None:
    chunks = chunk_document(doc, "default")
    assert all(c.document_id == doc.header.document_id and c.section for c in chunks)
    for paragraph in doc.paragraphs:
        if RECOMMENDATION.match(paragraph) or CRITERION.match(paragraph):
            assert sum(paragraph in c.text for c in chunks) == 1, paragraph[:40]


def test_some_sections_are_long_enough_to_split_at_sentences() -> None:
    long_sections = {
        doc.header.document_id
        for doc in DOCS
        for section in sections(doc)
        if sum(len(p.split()) for p in section.paragraphs) > 2.5 * MAX_WORDS and len(section.paragraphs) >= 3
    }
    long_paragraphs = {
        doc.header.document_id
        for doc in DOCS
        for p in doc.paragraphs
        if len(p.split()) > MAX_WORDS and not (RECOMMENDATION.match(p) or CRITERION.match(p))
    }
    assert len(long_sections) >= 5 and len(long_paragraphs) >= 10


def test_payer_policies_list_checkable_criteria() -> None:
    policies = {d.header.document_id: d for d in DOCS if d.header.doc_type == "payer_policy"}
    assert {"pa-semaglutide", "pa-adalimumab", "pa-mri-lumbar-spine", "pa-total-knee-arthroplasty"} <= set(
        policies
    )
    assert len(policies) >= 6
    assert "72148" in policies["pa-mri-lumbar-spine"].header.title
    assert "27447" in policies["pa-total-knee-arthroplasty"].header.title
    for doc_id, doc in policies.items():
        in_coverage = False
        criteria: list[int] = []
        for paragraph in doc.paragraphs:
            if found := heading_of(paragraph):
                in_coverage = found[0] == "2" or found[0].startswith("2.")
                if found[0] == "2":
                    assert "coverage criteria" in found[1].lower(), doc_id
            elif match := CRITERION.match(paragraph):
                assert in_coverage, f"{doc_id}: criterion outside section 2"
                criteria.append(int(match.group(1)))
        assert 3 <= len(criteria) <= 6 and criteria == list(range(1, len(criteria) + 1)), doc_id
    # criteria name what the PA workflow can check in FHIR data
    text = {doc_id: doc.text for doc_id, doc in policies.items()}
    assert "E11" in text["pa-semaglutide"] and "metformin" in text["pa-semaglutide"]
    assert "HbA1c" in text["pa-semaglutide"]
    assert "M05" in text["pa-adalimumab"] and "methotrexate" in text["pa-adalimumab"]
    assert "M54.50" in text["pa-mri-lumbar-spine"] and "6 weeks" in text["pa-mri-lumbar-spine"]
    assert "M17" in text["pa-total-knee-arthroplasty"] and "BMI" in text["pa-total-knee-arthroplasty"]


# -- .docx / .pdf -------------------------------------------------------------------------------------
def _header_lines(lines: list[str]) -> dict[str, str]:
    header: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            break
        key, _, value = line.partition(":")
        header[key.strip()] = value.strip()
    return header


@pytest.mark.parametrize("path", sorted(STARTER.glob("*.docx")), ids=lambda p: p.name)
def test_docx_header_survives_python_docx(path: Path) -> None:
    paragraphs = [p.text for p in docx.Document(str(path)).paragraphs]
    header = _header_lines(paragraphs)
    assert tuple(header) == HEADER_KEYS and header["Document-Id"] == path.stem
    styled = [(p.style.name if p.style else "", p.text) for p in docx.Document(str(path)).paragraphs]
    headings = [text for style, text in styled if style.startswith("Heading")]
    assert headings and all(heading_of(text) for text in headings)


@pytest.mark.parametrize("path", sorted(STARTER.glob("*.pdf")), ids=lambda p: p.name)
def test_pdf_header_survives_pypdf(path: Path) -> None:
    reader = PdfReader(str(path))
    assert len(reader.pages) >= 2
    lines = [line.strip() for line in reader.pages[0].extract_text().splitlines()]
    header = _header_lines(lines)
    assert tuple(header) == HEADER_KEYS and header["Document-Id"] == path.stem


@pytest.mark.parametrize("source", sorted(docwriter.SOURCE_DIR.glob("*.txt")), ids=lambda p: p.name)
def test_binary_documents_are_built_from_their_sources(source: Path, tmp_path: Path) -> None:
    text = source.read_text(encoding="utf-8")
    assert text.isascii()  # the PDF writer uses WinAnsi Helvetica
    stem, fmt = source.name.removesuffix(".txt").rsplit(".", 1)
    committed = STARTER / f"{stem}.{fmt}"
    rebuilt = tmp_path / committed.name
    (docwriter.write_docx if fmt == "docx" else docwriter.write_pdf)(text, rebuilt)
    fresh = extract_bytes(rebuilt.read_bytes(), rebuilt.name)
    # byte-identical, so a rebuild leaves the ingestion content hash alone (python -m careflow.kb.docwriter)
    assert committed.read_bytes() == rebuilt.read_bytes()
    assert extract(committed).paragraphs == fresh.paragraphs
    _header, blocks = docwriter.parse_source(text)
    assert len(fresh.paragraphs) == len(blocks)


def test_pdf_writer_escapes_and_paginates() -> None:
    body = "\n\n".join(
        f"{i} Section (part {i})\n\nText with a backslash \\ and (brackets)." for i in range(1, 40)
    )
    text = "Document-Id: t\nTitle: T\nOrganization: O\nEffective-Date: 2025-01-01\nDoc-Type: protocol\n"
    data = docwriter.pdf_bytes(text + "Version: 1\n\n" + body)
    reader = PdfReader(io.BytesIO(data))
    extracted = "\n".join(page.extract_text() for page in reader.pages)
    assert len(reader.pages) > 1
    assert "39 Section (part 39)" in extracted and "backslash \\ and (brackets)." in extracted


# -- evaluation sets ----------------------------------------------------------------------------------
def test_golden_set_points_at_existing_sections() -> None:
    rows = _jsonl("golden_set.jsonl")
    assert len(rows) >= 70
    assert len({row["id"] for row in rows}) == len(rows)
    assert len({str(row["question"]).lower() for row in rows}) == len(rows)
    covered = set()
    for row in rows:
        assert row["tenant_id"] == "default" and row["topic"]
        expected = row["expected"]
        assert isinstance(expected, list) and expected, row["id"]
        for item in expected:
            doc = BY_ID.get(item["document_id"])
            assert doc is not None, f"{row['id']}: unknown document {item['document_id']}"
            want = item["section"]
            numbers = _section_numbers(doc)
            assert any(n == want or n.startswith(want + ".") for n in numbers), f"{row['id']}: {want}"
            covered.add(item["document_id"])
    assert len(covered) >= 40  # nearly every starter document is asked about


def test_golden_questions_do_not_copy_section_titles() -> None:
    headings = {
        found[1].split(" ", 1)[1].lower() for doc in DOCS for p in doc.paragraphs if (found := heading_of(p))
    }
    for row in _jsonl("golden_set.jsonl"):
        assert str(row["question"]).lower().strip("?. ") not in headings, row["id"]


def test_cache_pairs_are_well_formed() -> None:
    rows = _jsonl("cache_pairs.jsonl")
    assert len(rows) >= 60
    assert len({row["id"] for row in rows}) == len(rows)
    kinds = Counter(row["kind"] for row in rows)
    assert set(kinds) == {"paraphrase", "distractor"}
    assert kinds["paraphrase"] >= 30 and kinds["distractor"] >= 40
    types = Counter(row["distractor_type"] for row in rows if row["kind"] == "distractor")
    assert set(types) == {"negation", "other_drug", "population", "dose", "condition"}
    for row in rows:
        assert row["original"] and row["candidate"] and row["original"] != row["candidate"], row["id"]
        if row["kind"] == "paraphrase":
            assert row["distractor_type"] is None, row["id"]
    pairs = [(row["original"], row["candidate"]) for row in rows]
    assert len(set(pairs)) == len(pairs)


# -- synthetic generator ------------------------------------------------------------------------------
def test_synthetic_documents_are_deterministic_unique_and_parse() -> None:
    first = list(generate_documents(60, seed=11, pages_per_doc=2))
    again = list(generate_documents(60, seed=11, pages_per_doc=2))
    other = list(generate_documents(60, seed=12, pages_per_doc=2))
    assert first == again
    assert [d.text for d in first] != [d.text for d in other]
    ids = {d.document_id for d in first} | {d.document_id for d in other}
    assert len(ids) == 120
    doc_types: Counter[str] = Counter()
    for doc in first:
        extracted = extract_bytes(doc.text.encode(), doc.filename)
        assert extracted.header.document_id == doc.document_id
        doc_types[extracted.header.doc_type] += 1
        words = len(extracted.text.split())
        assert 2 * 500 * 0.9 <= words <= 2 * 500 * 1.4, words
        current = "0"
        for paragraph in extracted.paragraphs:
            if found := heading_of(paragraph):
                current = found[0]
            elif match := RECOMMENDATION.match(paragraph):
                assert match.group(1) == current
        assert chunk_document(extracted, "t")
    assert set(doc_types) == set(DOC_TYPES)


def test_synthetic_slice_is_independent_of_what_came_before() -> None:
    tenth = list(generate_documents(10, seed=5, pages_per_doc=1))[9]
    assert tenth.document_id.startswith("syn-5-000009-")
    assert tenth == list(generate_documents(10, seed=5, pages_per_doc=1))[9]
    five_pages = next(generate_documents(3, seed=5, pages_per_doc=5))
    assert len(five_pages.text.split()) >= 5 * 500 * 0.9


def test_write_corpus_writes_markdown_files(tmp_path: Path) -> None:
    assert write_corpus(tmp_path / "corpus", 7, seed=3, pages=1) == 7
    files = sorted((tmp_path / "corpus").glob("*.md"))
    assert len(files) == 7
    assert all(extract(path).header.document_id == path.stem for path in files)
