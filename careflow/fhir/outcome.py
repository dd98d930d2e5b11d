"""OperationOutcome: how the sandbox says what is wrong and where, and how the client summarises it.

Diagnostics never repeat submitted values (they can be PHI); `summary` goes further and keeps only the
issue codes and FHIRPath locations, which is what exception messages, logs and Temporal failures carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    code: str  # FHIR issue-type: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: str = "error"

    def to_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue

    def location_summary(self) -> str:
        where = ",".join(self.expression)
        return f"{self.code} at {where}" if where else self.code


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def summary(outcome: Mapping[str, Any] | None) -> str:
    """PHI-safe one-liner of an OperationOutcome: issue codes and locations, never diagnostics."""
    if not outcome:
        return "no OperationOutcome"
    parts = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, Mapping):
            continue
        where = issue.get("expression") or issue.get("location") or []
        loc = ",".join(str(w) for w in where if isinstance(w, str))
        parts.append(f"{issue.get('code', '?')}" + (f" at {loc}" if loc else ""))
    return "; ".join(parts[:5]) + (f" (+{len(parts) - 5} more)" if len(parts) > 5 else "") or "no issues"
