"""ICD-10-CM candidate codes of a note (seed P14): only codes that exist in the real code set and are
billable (a leaf: a category such as E11 is not) survive, at most 25 per encounter, each with the code
set's own description.  The code set is CMS's ICD-10-CM tabular list as shipped by `simple-icd-10-cm`
(April 1, 2026 release).  The codes stay candidates until a coder accepts them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from types import ModuleType

MAX_CANDIDATES = 25


@cache
def _codeset() -> ModuleType:  # the tabular list takes about a second to load: once, on first use
    with warnings.catch_warnings():  # it loads its data with importlib.resources' legacy calls
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm

    return simple_icd_10_cm


@dataclass(frozen=True)
class Candidate:
    code: str  # dotted, upper case: "E11.9"
    description: str


@dataclass(frozen=True)
class Dropped:
    code: str  # as proposed
    reason: str


def normalise(code: str) -> str:
    raw = code.strip().upper().replace(" ", "")
    return raw if "." in raw or len(raw) <= 3 else f"{raw[:3]}.{raw[3:]}"


def validate(codes: Iterable[str], limit: int = MAX_CANDIDATES) -> tuple[list[Candidate], list[Dropped]]:
    """The proposed codes that are real and billable (first `limit`, duplicates once), and the others
    with the reason each was dropped."""
    cm = _codeset()
    kept: list[Candidate] = []
    dropped: list[Dropped] = []
    seen: set[str] = set()
    for proposed in codes:
        code = normalise(proposed)
        if code in seen:
            continue
        seen.add(code)
        if not code or not cm.is_valid_item(code):
            dropped.append(Dropped(proposed, "not an ICD-10-CM code"))
        elif not cm.is_leaf(code):
            dropped.append(Dropped(proposed, "not billable: a category, a more specific subcode is needed"))
        elif len(kept) >= limit:
            dropped.append(Dropped(proposed, f"over the limit of {limit} candidates per encounter"))
        else:
            kept.append(Candidate(code, str(cm.get_description(code))))
    return kept, dropped
