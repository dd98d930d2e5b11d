"""Transparent, deterministic text rules of the offline drafting engine.

Evidence is classified by its id (`Condition/123`) or kind; matching is keyword and code based:
lower-cased word terms with a light plural stem, ICD-10-CM codes by prefix, numeric thresholds
("HbA1c > 7", "7.0% or higher") compared with the first number after the quantity's name in the
evidence, and a sentence-level negation cue ("no", "denies", "negative for") before a term turns a
mention into a denial; a criterion that is itself negated ("No history of pancreatitis") is met by a
denial and contradicted by a mention.  A criterion written as alternatives ("A, or B"; "at least one
of: A; B; or C") is met by any one of them; parenthesised examples are not required terms.  Only
clinical entries (conditions, treatments, observations, encounters) can contradict a criterion.
Nothing here knows medicine beyond these rules: every fact the engine writes is copied from evidence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from careflow.llm.types import Evidence

Category = Literal["condition", "treatment", "observation", "guideline", "transcript", "encounter", "other"]

_BY_RESOURCE: dict[str, Category] = {
    "condition": "condition",
    "medicationrequest": "treatment",
    "medicationstatement": "treatment",
    "medicationadministration": "treatment",
    "medication": "treatment",
    "procedure": "treatment",
    "immunization": "treatment",
    "observation": "observation",
    "diagnosticreport": "observation",
    "lab": "observation",
    "encounter": "encounter",
    "guideline": "guideline",
    "protocol": "guideline",
    "formulary": "guideline",
    "kb": "guideline",
    "transcript": "transcript",
}

# ICD-10-CM: a dotted code (E11.9, M17.11) or a three-character category made of letter + two digits (I10).
ICD10 = re.compile(r"\b([A-TV-Z][0-9][0-9A-Z]\.[0-9A-Z]{1,4}|[A-TV-Z][0-9]{2})\b")
# In a criterion, a code may end in a wildcard: "E11.*", "E11.x", "E11".
ICD10_PATTERN = re.compile(r"\b([A-TV-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{0,4})?)(?:\*|\.?[xX*]+)?(?![0-9A-Za-z])")
_WORD = re.compile(r"[a-z][a-z0-9]+|[0-9]+[a-z][a-z0-9]*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_NEGATION = re.compile(r"\b(no|not|denies|denied|without|negative for|never|absence of|ruled out)\b")
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_COMPARATORS: dict[str, str] = {
    ">=": ">=", "≥": ">=", "at least": ">=", "no less than": ">=", "minimum of": ">=",
    "<=": "<=", "≤": "<=", "at most": "<=", "no more than": "<=",
    ">": ">", "greater than": ">", "more than": ">", "above": ">", "over": ">", "exceeding": ">",
    "<": "<", "less than": "<", "below": "<", "under": "<",
}  # fmt: skip
_COMPARATOR = re.compile(
    r"(?P<lhs>[A-Za-z][A-Za-z0-9 /-]{0,40}?)\s*(?P<op>"
    + "|".join(re.escape(k) for k in sorted(_COMPARATORS, key=len, reverse=True))
    + r")\s*"
    + _NUMBER
    + r"(?P<unit>\s*(?:days?|weeks?|months?|years?))?",
    re.IGNORECASE,
)

# "7.0% or higher", "30 kg/m2 or more": the threshold before its comparator.
_POSTFIX = re.compile(
    _NUMBER + r"\s*(?:%|[a-z][a-z0-9/.*]*)?\s+or\s+(?P<dir>higher|more|greater|above|lower|less|below)\b",
    re.IGNORECASE,
)
_POSTFIX_OPS = {
    "higher": ">=",
    "more": ">=",
    "greater": ">=",
    "above": ">=",
    "lower": "<=",
    "less": "<=",
    "below": "<=",
}
# Measured quantities a criterion may name, with the names a record may use for each (longest first).
QUANTITIES: tuple[tuple[str, ...], ...] = (
    ("hemoglobin a1c", "haemoglobin a1c", "hba1c", "a1c"),
    ("body mass index", "bmi"),
    ("estimated glomerular filtration rate", "egfr"),
    ("ldl cholesterol", "ldl-c", "ldl"),
    ("creatinine",),
    ("hemoglobin", "haemoglobin"),
    ("ejection fraction", "lvef"),
)

STOPWORDS = frozenset(
    """a an and are as at be been by for from has have had in is it its of on or that the this to was were
    with will would should must may can patient patients documented documentation diagnosis diagnosed
    history record evidence clinical medical current currently prior previous trial failure failed
    least months month weeks week years year days day required requirement requires use used using
    type than more less greater treatment therapy including include includes other any each per
    unspecified without complications primary due one two three four five six or least adequate
    appropriate conventional standard recent recently within last confirmed active suspected suspicion
    present presence example""".split()
)


def stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Content terms in order of appearance, stemmed, without stopwords or duplicates."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(text.lower()):
        if len(w) >= 3 and w not in STOPWORDS:
            seen.setdefault(stem(w), None)
    return list(seen)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def first_sentence(text: str, limit: int = 240) -> str:
    parts = sentences(text)
    s = parts[0] if parts else text.strip()
    return s if len(s) <= limit else s[: limit - 3].rstrip() + "..."


def category(e: Evidence) -> Category:
    """What a piece of evidence is: by the FHIR resource type of its id, else by its kind."""
    head = e.id.split("/", 1)[0].lower() if "/" in e.id else ""
    if head in _BY_RESOURCE:
        return _BY_RESOURCE[head]
    kind = e.kind.lower()
    if kind in _BY_RESOURCE:
        return _BY_RESOURCE[kind]
    if e.id.lower().startswith(("guideline", "kb:")):
        return "guideline"
    return "other"


def icd10_codes(text: str) -> list[str]:
    return list(dict.fromkeys(ICD10.findall(text)))


def describe(e: Evidence) -> str:
    """A short description of a record entry, copied from it (its first sentence, else its title)."""
    return (first_sentence(e.text, 200) if e.text.strip() else e.title.strip()).rstrip(".")


def name_of(e: Evidence) -> str:
    """What a record entry is called (its title, else its first sentence), without ICD-10 codes."""
    name = e.title.strip() or first_sentence(e.text, 160)
    bare = re.sub(r"\s*\(?\b(?:ICD-10(?:-CM)?:?\s*)?" + ICD10.pattern[2:-2] + r"\b\)?", "", name)
    return bare.strip(" ,;:-") or name


def _term_positions(sentence: str, term: str) -> list[int]:
    return [m.start() for m in _WORD.finditer(sentence.lower()) if stem(m.group()) == term]


def mention(text: str, term: str) -> Literal["positive", "negated", "absent"]:
    """How a text mentions a term: positively anywhere wins; negated when every mention follows a cue."""
    found = False
    for s in sentences(text):
        for pos in _term_positions(s, term):
            found = True
            if not _NEGATION.search(s.lower()[:pos]):
                return "positive"
    return "negated" if found else "absent"


@dataclass
class Finding:
    status: Literal["met", "not_met", "unknown"]
    evidence_ids: list[str] = field(default_factory=list)
    reason: str = ""


def _quantity_names(text: str) -> list[str]:
    """Every name of the first known quantity the text names ("HbA1c" -> hemoglobin a1c, hba1c, a1c)."""
    lowered = text.lower()
    named = [(m.start(), q) for q in QUANTITIES for n in q for m in [_name_at(lowered, n)] if m]
    return list(min(named)[1]) if named else []


def _name_at(lowered: str, name: str) -> re.Match[str] | None:
    return re.search(r"(?<![a-z0-9])" + re.escape(name) + r"(?![a-z0-9])", lowered)


def _numeric_rule(criterion: str) -> tuple[list[str], str, float] | None:
    m = _COMPARATOR.search(criterion)
    if m is not None and not m.group("unit"):  # durations ("at least 3 months") are not thresholds
        lhs = [w for w in _WORD.findall(m.group("lhs").lower()) if w not in STOPWORDS]
        if lhs:
            # Names of the measured quantity, longest first: "body mass index", "mass index", "index".
            names = [" ".join(lhs[i:]) for i in range(max(0, len(lhs) - 3), len(lhs))]
            known = _quantity_names(m.group("lhs"))
            return (
                known + [n for n in names if n not in known],
                _COMPARATORS[m.group("op").lower()],
                float(m.group(3)),
            )
    post = _POSTFIX.search(criterion)
    if post is not None:
        names = _quantity_names(criterion[: post.start()])
        if names:
            return names, _POSTFIX_OPS[post.group("dir").lower()], float(post.group(1))
    return None


def _compare(value: float, op: str, threshold: float) -> bool:
    return {
        ">=": value >= threshold,
        "<=": value <= threshold,
        ">": value > threshold,
        "<": value < threshold,
    }[op]


def _check_numeric(rule: tuple[list[str], str, float], record: list[Evidence]) -> Finding | None:
    names, op, threshold = rule
    for name in names:
        # The value is the first number after the name, not a digit inside a word (the "1" of "HbA1c").
        pattern = re.compile(
            r"(?<![A-Za-z0-9])" + re.escape(name) + r"[^0-9\n]{0,25}?(?<![A-Za-z0-9.])" + _NUMBER,
            re.IGNORECASE,
        )
        hits = [(e, float(m.group(1))) for e in record for m in [pattern.search(f"{e.title} {e.text}")] if m]
        if hits:
            meeting = [e.id for e, v in hits if _compare(v, op, threshold)]
            if meeting:
                return Finding("met", meeting, f"{name} {op} {threshold:g} in the record")
            return Finding(
                "not_met", [e.id for e, _ in hits], f"recorded {name} does not satisfy {op} {threshold:g}"
            )
    return None


def _check_codes(codes: list[str], record: list[Evidence]) -> Finding | None:
    ids = [
        e.id
        for e in record
        if any(c.startswith(p.rstrip(".")) for c in icd10_codes(f"{e.title} {e.text}") for p in codes)
    ]
    return Finding("met", ids, "diagnosis code in the record") if ids else None


_PARENTHESES = re.compile(r"\([^()]*\)")
_CLINICAL: frozenset[Category] = frozenset({"condition", "treatment", "observation", "encounter"})


def alternatives(criterion: str) -> list[str]:
    """The criterion's top-level alternatives ("A, or B"; "at least one red flag: A; B; or C"), the
    first without its lead-in up to a colon; [criterion] when it offers none.  Text in parentheses
    (examples, codes) never splits."""
    parts, cuts, depth = [], [0], 0
    for i, ch in enumerate(criterion):
        depth = depth + (ch == "(") - (ch == ")" and depth > 0)
        if depth == 0 and (ch == ";" or criterion.startswith(", or ", i)):
            parts.append(criterion[cuts[-1] : i])
            cuts.append(i + 1)
    if not parts:
        return [criterion]
    parts.append(criterion[cuts[-1] :])
    colon = _top_level(parts[0], ":")
    if colon >= 0:
        parts[0] = parts[0][colon + 1 :]
    cleaned = [re.sub(r"^[\s,]*(?:or|either)\s+", "", p).strip(" ,.") for p in parts]
    return [p for p in cleaned if p]


def _top_level(text: str, char: str) -> int:
    """The index of the last `char` outside parentheses, or -1."""
    found, depth = -1, 0
    for i, ch in enumerate(text):
        depth = depth + (ch == "(") - (ch == ")" and depth > 0)
        if depth == 0 and ch == char:
            found = i
    return found


def assess_criterion(criterion: str, record: list[Evidence]) -> Finding:
    """met / not_met / unknown for one payer criterion against the patient's record (never guidelines)."""
    options = alternatives(criterion)
    if len(options) > 1:
        findings = [assess_criterion(o, record) for o in options]  # an option offers no alternatives
        met = next((f for f in findings if f.status == "met"), None)
        if met is not None:
            return met
        if all(f.status == "not_met" for f in findings):
            ids = _ordered(i for f in findings for i in f.evidence_ids)
            return Finding("not_met", ids, "no alternative holds")
        return Finding("unknown", [], "no alternative documented: " + "; ".join(f.reason for f in findings))
    numeric = _numeric_rule(_PARENTHESES.sub(" ", criterion))  # examples in parentheses are not thresholds
    if numeric is not None:
        found = _check_numeric(numeric, record)
        if found is not None:
            return found
    codes = ICD10_PATTERN.findall(criterion)
    if codes:
        found = _check_codes(codes, record)
        if found is not None:
            return found
    return _assess_terms(criterion, record)


def _assess_terms(criterion: str, record: list[Evidence]) -> Finding:
    """Every content term of the criterion (outside parentheses) documented, or one contradicted."""
    anchors = [t for t in terms(_PARENTHESES.sub(" ", criterion)) if not ICD10.fullmatch(t.upper())]
    if not anchors:
        return Finding("unknown", [], "no checkable term in the criterion")
    # "No history of pancreatitis" asks for a term's absence: the record must deny it, not mention it.
    wants_absence = {a: mention(criterion, a) == "negated" for a in anchors}
    positive: dict[str, list[str]] = {a: [] for a in anchors}
    negated: dict[str, list[str]] = {a: [] for a in anchors}
    for e in record:
        text = f"{e.title}. {e.text}"
        clinical = category(e) in _CLINICAL
        for a in anchors:
            how = mention(text, a)
            if how == "positive":
                positive[a].append(e.id)
            elif how == "negated" and clinical:  # an insurance or demographic line denies nothing
                negated[a].append(e.id)

    def support(a: str) -> list[str]:
        if wants_absence[a]:
            return [] if positive[a] else negated[a]
        return positive[a]

    def contradiction(a: str) -> list[str]:
        if wants_absence[a]:
            return [i for i in positive[a] if category(_by_id(record, i)) in _CLINICAL]
        return [] if positive[a] else negated[a]

    if all(support(a) for a in anchors):
        return Finding("met", _ordered(i for a in anchors for i in support(a)), "every term documented")
    contradicted = [a for a in anchors if contradiction(a)]
    if contradicted:
        ids = _ordered(i for a in contradicted for i in contradiction(a))
        return Finding("not_met", ids, "the record contradicts " + ", ".join(contradicted))
    return Finding("unknown", [], "not documented: " + ", ".join(a for a in anchors if not support(a)))


def _by_id(record: list[Evidence], evidence_id: str) -> Evidence:
    return next(e for e in record if e.id == evidence_id)


def _ordered(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def relevance(query_terms: list[str], text: str) -> int:
    """How many of the query's terms a text contains (a keyword-overlap score)."""
    have = set(terms(text))
    return sum(1 for t in query_terms if t in have)


def best_sentence(query_terms: list[str], text: str) -> str:
    """The sentence of `text` that shares the most terms with the query (the first one on a tie)."""
    scored = [(relevance(query_terms, s), -i, s) for i, s in enumerate(sentences(text))]
    return max(scored)[2] if scored else text.strip()


_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2}|\d{4}-\d{2})\b")
_EFFECTIVE = re.compile(
    r"(?:effective(?: date)?|updated|published)\s*[:=]?\s*(\d{4}-\d{2}-\d{2}|\d{4}-\d{2})", re.I
)
_SECTION = re.compile(r"^\s*section\s*[:=]\s*(.+?)\s*$", re.I | re.M)


def source_metadata(e: Evidence) -> tuple[str, str, str]:
    """(document title, section, effective date) of a knowledge-base chunk, as far as it states them."""
    doc, _, fragment = e.id.partition("#")
    title = e.title.strip() or doc.split(":", 1)[-1]
    section_line = _SECTION.search(e.text)
    section = section_line.group(1) if section_line else fragment
    effective = _EFFECTIVE.search(f"{e.title}\n{e.text}") or _DATE.search(e.title)
    return title, section, effective.group(1) if effective else ""
