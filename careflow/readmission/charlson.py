"""Charlson comorbidity index from ICD-10 codes: Quan et al.'s ICD-10 coding algorithm (Med Care
2005;43:1130) with Charlson's original weights (J Chronic Dis 1987), the index LACE's C uses.

comorbidipy (the usual library) is not usable here: its releases that support pandas 3 need
Python 3.13, and the last one for 3.11 imports a name pandas 3 removed.  The table below is Quan's,
transcribed with ranges expanded; `tests/readmission` checks it against codes of each category.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def _span(letter: str, first: int, last: int, width: int = 2) -> tuple[str, ...]:
    return tuple(f"{letter}{n:0{width}d}" for n in range(first, last + 1))


def _sub(stem: str, first: int, last: int) -> tuple[str, ...]:
    return tuple(f"{stem}{n}" for n in range(first, last + 1))


def _diabetes(fourths: str) -> tuple[str, ...]:
    return tuple(f"E1{k}{d}" for k in "01234" for d in fourths)


@dataclass(frozen=True)
class Category:
    name: str
    weight: int
    prefixes: tuple[str, ...]  # ICD-10 codes without the dot; a code matches by prefix


CATEGORIES: tuple[Category, ...] = (
    Category("myocardial_infarction", 1, ("I21", "I22", "I252")),
    Category(
        "heart_failure",
        1,
        ("I099", "I110", "I130", "I132", "I255", "I420", *_sub("I42", 5, 9), "I43", "I50", "P290"),
    ),
    Category(
        "peripheral_vascular",
        1,
        (
            "I70",
            "I71",
            "I731",
            "I738",
            "I739",
            "I771",
            "I790",
            "I792",
            "K551",
            "K558",
            "K559",
            "Z958",
            "Z959",
        ),
    ),
    Category("cerebrovascular", 1, ("G45", "G46", "H340", *_span("I", 60, 69))),
    Category("dementia", 1, ("F00", "F01", "F02", "F03", "F051", "G30", "G311")),
    Category(
        "chronic_pulmonary",
        1,
        ("I278", "I279", *_span("J", 40, 47), *_span("J", 60, 67), "J684", "J701", "J703"),
    ),
    Category("rheumatic", 1, ("M05", "M06", "M315", "M32", "M33", "M34", "M351", "M353", "M360")),
    Category("peptic_ulcer", 1, _span("K", 25, 28)),
    Category(
        "mild_liver",
        1,
        (
            "B18",
            *_sub("K70", 0, 3),
            "K709",
            *_sub("K71", 3, 5),
            "K717",
            "K73",
            "K74",
            "K760",
            *_sub("K76", 2, 4),
            "K768",
            "K769",
            "Z944",
        ),
    ),
    Category("diabetes", 1, _diabetes("01689")),
    Category("diabetes_complicated", 2, _diabetes("23457")),
    Category("hemiplegia", 2, ("G041", "G114", "G801", "G802", "G81", "G82", *_sub("G83", 0, 4), "G839")),
    Category(
        "renal",
        2,
        (
            "I120",
            "I131",
            *_sub("N03", 2, 7),
            *_sub("N05", 2, 7),
            "N18",
            "N19",
            "N250",
            *_sub("Z49", 0, 2),
            "Z940",
            "Z992",
        ),
    ),
    Category(
        "malignancy",
        2,
        (
            *_span("C", 0, 26),
            *_span("C", 30, 34),
            *_span("C", 37, 41),
            "C43",
            *_span("C", 45, 58),
            *_span("C", 60, 76),
            *_span("C", 81, 85),
            "C88",
            *_span("C", 90, 97),
        ),
    ),
    Category(
        "severe_liver",
        3,
        ("I850", "I859", "I864", "I982", "K704", "K711", "K721", "K729", "K765", "K766", "K767"),
    ),
    Category("metastatic", 6, _span("C", 77, 80)),
    Category("hiv", 6, ("B20", "B21", "B22", "B24")),
)
# A milder category does not count beside its severe form.
SUPERSEDED = {"mild_liver": "severe_liver", "diabetes": "diabetes_complicated", "malignancy": "metastatic"}


def categories(codes: Iterable[str]) -> set[str]:
    """The Charlson categories these ICD-10 / ICD-10-CM codes fall in (dots and case ignored)."""
    normalised = [c.replace(".", "").strip().upper() for c in codes]
    found = {cat.name for cat in CATEGORIES if any(code.startswith(cat.prefixes) for code in normalised)}
    return {name for name in found if SUPERSEDED.get(name) not in found}


def index(codes: Iterable[str]) -> int:
    weights = {cat.name: cat.weight for cat in CATEGORIES}
    return sum(weights[name] for name in categories(codes))
