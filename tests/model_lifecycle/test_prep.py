"""Data preparation for fine-tuning (careflow/finetune/export.py, prep.py): the synthetic export's
planted identifiers, defects, copies and canaries, and what preparation makes of them."""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import pytest

from careflow.finetune.export import CANARY_PREFIX, ExportedNote, export
from careflow.finetune.prep import (
    Example,
    PrepReport,
    data_hash,
    defect,
    from_jsonl,
    prepare,
    split_of,
    to_jsonl,
)


@cache
def notes() -> list[ExportedNote]:
    return export(5, 30, canaries=4)


def embed(texts: list[str]) -> np.ndarray:
    from careflow.kb.embed import get_embedder

    return get_embedder().matrix(texts)


@cache
def prepared() -> tuple[list[Example], PrepReport]:
    return prepare(notes(), embed)


def test_the_export_is_deterministic_and_every_planted_identifier_is_where_it_says() -> None:
    again = export(5, 30, canaries=4)
    assert [n.text for n in again] == [n.text for n in notes()]
    assert len(notes()) == 120
    for n in notes():
        for p in n.planted:
            assert n.text[p.start : p.end] == p.text
    kinds = Counter(p.kind.value for n in notes() for p in n.planted)
    assert {"PATIENT", "DATE", "PHONE", "MRN", "DOB", "NAME", "ADDRESS"} <= set(kinds)


def test_the_export_has_the_defects_copies_and_canaries_a_real_one_has() -> None:
    defects = Counter(n.defect for n in notes() if n.defect)
    assert set(defects) <= {"too-short", "incomplete", "no-sections"} and sum(defects.values()) >= 3
    copies = [n for n in notes() if n.copy_of]
    assert copies
    by_id = {n.note_id: n for n in notes()}
    for copy in copies:  # the same note with another visit date
        assert copy.text != by_id[copy.copy_of].text
        assert copy.text.split(" for ", 1)[1] == by_id[copy.copy_of].text.split(" for ", 1)[1]
    canaries = [n for n in notes() if n.canary]
    assert len(canaries) == 4 and all(f"{CANARY_PREFIX}: {n.canary}." in n.text for n in canaries)


def test_preparation_removes_the_planted_identifiers_and_says_how_many() -> None:
    examples, report = prepared()
    assert report.planted == sum(len(n.planted) for n in notes())
    assert report.removed_share >= 0.995, report.missed
    leftover = {p.text for n in notes() for p in n.planted if len(p.text) > 4}
    assert not [e.note_id for e in examples for x in leftover if x in e.completion]
    assert "no statistical NER" in report.deid_method


def test_the_filter_drops_exactly_the_defective_notes_and_dedup_exactly_the_copies() -> None:
    examples, report = prepared()
    assert report.filtered == dict(Counter(n.defect for n in notes() if n.defect))
    assert report.duplicates == report.duplicates_expected == report.duplicates_matched > 0
    kept = {e.note_id for e in examples}
    assert not kept & {n.note_id for n in notes() if n.copy_of or n.defect}
    assert report.exported == len(examples) + sum(report.filtered.values()) + report.duplicates


def test_examples_are_prompt_completion_pairs_split_by_a_stable_hash() -> None:
    examples, report = prepared()
    e = examples[0]
    assert e.prompt.startswith("Write a SOAP note") and e.completion.startswith("SUBJECTIVE: ")
    assert "[PATIENT]" in e.completion and set(e.groups) == {"age", "sex", "payer", "diagnoses"}
    assert report.splits == dict(Counter(x.split for x in examples))
    assert all(x.split == split_of(x.note_id) for x in examples)
    shares = Counter(split_of(f"note-{i}") for i in range(20_000))
    assert shares["train"] / 20_000 == pytest.approx(0.90, abs=0.01)
    assert shares["test"] / 20_000 == pytest.approx(0.05, abs=0.01)
    canaries = [x for x in examples if x.canary]
    assert canaries and all(x.canary_prefix().endswith(f"{CANARY_PREFIX}: ") for x in canaries)  # type: ignore[union-attr]


def test_the_data_hash_names_the_examples_as_trained_on() -> None:
    examples, report = prepared()
    assert report.data_hash == data_hash(list(reversed(examples)))
    changed = [examples[0].__class__(**{**examples[0].__dict__, "completion": "x"}), *examples[1:]]
    assert data_hash(changed) != report.data_hash
    assert from_jsonl(to_jsonl(examples)) == examples


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Refill sent.", "too-short"),
        ("SUBJECTIVE: " + "word " * 50 + "\nOBJECTIVE: fine.\nASSESSMENT: 1. Knee", "incomplete"),
        ("Seen today. " + "word " * 50 + "Plan to return.", "no-sections"),
        ("SUBJECTIVE: " + "word " * 50 + "\nOBJECTIVE: a.\nASSESSMENT: b.\nPLAN: c.", None),
    ],
)
def test_the_quality_filter_names_what_is_wrong(text: str, verdict: str | None) -> None:
    assert defect(text) == verdict
