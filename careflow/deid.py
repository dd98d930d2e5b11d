"""De-identification of clinical text before it leaves the PHI zone (ambient transcripts before the
gateway; note exports before fine-tuning).

Two sources, as the seed asks: the identifiers the EHR knows for *this* patient (names, birth date,
MRNs, phones, address parts: `Identifiers.of_patient`), found in any case and spacing; and patterns
for what any text may hold (dates, phone numbers, MRN-like ids, e-mail, SSN, street addresses, ZIP).
Each is replaced by a placeholder (`[PATIENT]`, `[DATE]`, ...); the mapping from placeholder back to
the original stays with the caller in the PHI zone and never goes into a prompt.

`leaks()` is the last check before a gateway call: the known identifiers of the patient that are
still in the text (it must return nothing, or the call is refused).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    PATIENT = "PATIENT"
    NAME = "NAME"  # someone else named beside the patient: a relative, a caregiver
    DOB = "DOB"  # the patient's birth date (other dates are DATE)
    DATE = "DATE"
    MRN = "MRN"
    PHONE = "PHONE"
    ADDRESS = "ADDRESS"
    EMAIL = "EMAIL"
    SSN = "SSN"

    @property
    def placeholder(self) -> str:
        return f"[{self.value}]"


MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")  # fmt: skip
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
# Order matters: the longest, most specific shapes first (a phone is not read as a date, and so on).
PATTERNS: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    (Kind.EMAIL, re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    # A relative's or caregiver's name, found by the word before it (the name is the group replaced).
    (
        Kind.NAME,
        re.compile(
            r"(?i:\b(?:daughter|son|wife|husband|spouse|partner|sister|brother|mother|father|niece|nephew|"
            r"caregiver|neighbou?r|friend)(?:'s)?(?:,|\s+named)?\s+)([A-Z][a-z]+(?:[ -][A-Z][a-z]+)?)\b"
        ),
    ),
    (Kind.SSN, re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    (Kind.PHONE, re.compile(r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b")),
    (Kind.MRN, re.compile(r"(?i)\b(?:mrn|medical record(?: number)?|record number)[\s#:.-]*[A-Z0-9-]{4,}\b")),
    (Kind.DATE, re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2})\b")),
    (Kind.DATE, re.compile(rf"(?i)\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b")),
    (Kind.DATE, re.compile(rf"(?i)\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:,?\s+\d{{4}})?\b")),
    (
        Kind.ADDRESS,
        re.compile(
            r"(?i)\b\d{1,6}\s+(?:[A-Z][a-z]+\s+){1,3}(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|"
            r"drive|dr|court|ct|way|place|pl|terrace|circle|parkway|pkwy)\b\.?(?:\s+(?:apt|suite|unit)\.?\s*\w+)?"
        ),
    ),
)


@dataclass(frozen=True)
class Identifiers:
    """What the EHR knows identifies this patient."""

    names: tuple[str, ...] = ()  # full names and each given and family name
    birth_date: date | None = None
    mrns: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()  # street lines, cities, postal codes

    @classmethod
    def of_patient(cls, patient: dict[str, Any]) -> Identifiers:
        names: list[str] = []
        for n in patient.get("name") or []:
            given = [g for g in n.get("given") or [] if isinstance(g, str)]
            family = n.get("family") if isinstance(n.get("family"), str) else None
            names += given + ([family] if family else [])
            if given and family:
                names += [f"{given[0]} {family}", " ".join([*given, family])]
            if isinstance(n.get("text"), str):
                names.append(n["text"])
        birth = patient.get("birthDate")
        addresses: list[str] = []
        for a in patient.get("address") or []:
            addresses += [x for x in a.get("line") or [] if isinstance(x, str)]
            addresses += [a[k] for k in ("city", "postalCode") if isinstance(a.get(k), str)]
        return cls(
            names=tuple(dict.fromkeys(n for n in names if len(n) >= 2)),
            birth_date=date.fromisoformat(birth[:10])
            if isinstance(birth, str) and len(birth) >= 10
            else None,
            mrns=tuple(str(i["value"]) for i in patient.get("identifier") or [] if i.get("value")),
            phones=tuple(str(t["value"]) for t in patient.get("telecom") or [] if t.get("value")),
            addresses=tuple(addresses),
        )

    def known(self) -> list[tuple[Kind, re.Pattern[str]]]:
        """A pattern per known identifier: case-insensitive, any spacing; numbers by their digits."""
        out: list[tuple[Kind, re.Pattern[str]]] = []
        for name in sorted(self.names, key=len, reverse=True):  # "Maria Lopez" before "Maria"
            words = [re.escape(w) for w in name.split()]
            out.append((Kind.PATIENT, re.compile(r"(?i)(?<!\w)" + r"[\s,.]+".join(words) + r"(?!\w)")))
        for mrn in self.mrns:
            out.append(
                (Kind.MRN, re.compile(r"(?i)(?<!\w)" + r"[\s-]?".join(map(re.escape, mrn)) + r"(?!\w)"))
            )
        for phone in self.phones:
            digits = re.sub(r"\D", "", phone)[-10:]
            if len(digits) == 10:
                out.append((Kind.PHONE, re.compile(r"\(?" + r"\D{0,2}".join(digits))))
        for part in sorted(self.addresses, key=len, reverse=True):
            words = [re.escape(w) for w in part.split()]
            out.append((Kind.ADDRESS, re.compile(r"(?i)(?<!\w)" + r"\s+".join(words) + r"(?!\w)")))
        if self.birth_date is not None:
            out += [(Kind.DOB, re.compile(p, re.IGNORECASE)) for p in _date_renderings(self.birth_date)]
        return out


def _date_renderings(d: date) -> list[str]:
    month = MONTHS[d.month - 1]
    return [
        rf"\b{d.year}-0?{d.month}-0?{d.day}\b",
        rf"\b0?{d.month}[/.-]0?{d.day}[/.-](?:{d.year}|{d.year % 100:02d})\b",
        rf"\b{month[:3]}[a-z]*\.?\s+{d.day}(?:st|nd|rd|th)?,?\s+{d.year}\b",
        rf"\b{d.day}(?:st|nd|rd|th)?\s+(?:of\s+)?{month[:3]}[a-z]*\.?,?\s+{d.year}\b",
    ]


@dataclass(frozen=True)
class Replacement:
    kind: Kind
    original: str
    start: int  # in the original text
    end: int


@dataclass
class Deidentified:
    text: str
    replacements: list[Replacement] = field(default_factory=list)  # PHI: stays in the PHI zone

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.replacements:
            out[r.kind.value] = out.get(r.kind.value, 0) + 1
        return out


def _spans(text: str, rules: Iterable[tuple[Kind, re.Pattern[str]]]) -> list[Replacement]:
    """Every match of every rule, earlier rules winning where matches overlap."""
    taken: list[Replacement] = []
    for kind, pattern in rules:
        for m in pattern.finditer(text):
            group = 1 if pattern.groups else 0  # a pattern with a group replaces that group only
            start, end = m.span(group)
            if end > start and not any(start < t.end and t.start < end for t in taken):
                taken.append(Replacement(kind, m.group(group), start, end))
    return sorted(taken, key=lambda r: r.start)


def deidentify(text: str, known: Identifiers | None = None) -> Deidentified:
    """The text with e-mail addresses and relatives' names (whole, even where they hold one of the
    patient's names), the patient's known identifiers, then the other patterns' matches, replaced by
    placeholders."""
    email, relative, *rest = PATTERNS
    rules = [email, relative, *(known.known() if known else []), *rest]
    found = _spans(text, rules)
    parts, at = [], 0
    for r in found:
        parts += [text[at : r.start], r.kind.placeholder]
        at = r.end
    parts.append(text[at:])
    return Deidentified("".join(parts), found)


def leaks(text: str, known: Identifiers) -> list[Kind]:
    """The kinds of the patient's known identifiers still present in `text` (the pre-gateway check)."""
    return sorted({r.kind for r in _spans(text, known.known())})


def reidentify(text: str, values: dict[Kind, str], kinds: Sequence[Kind] = (Kind.PATIENT, Kind.DOB)) -> str:
    """Put the EHR's own values back for the given placeholders (a note's name and birth date)."""
    for kind in kinds:
        if kind in values:
            text = text.replace(kind.placeholder, values[kind])
    return text


def note_values(patient: dict[str, Any]) -> dict[Kind, str]:
    """What a note shows for the patient's placeholders: the EHR's name ("Given Family") and birth date."""
    values: dict[Kind, str] = {}
    name = (patient.get("name") or [{}])[0]
    shown = " ".join([*(name.get("given") or [])[:1], *([name["family"]] if name.get("family") else [])])
    if shown:
        values[Kind.PATIENT] = shown
    if isinstance(patient.get("birthDate"), str):
        values[Kind.DOB] = patient["birthDate"]
    return values
