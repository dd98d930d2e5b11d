"""Payer policy criteria from the knowledge base: which policy covers the order's item, and its
numbered `Criterion N:` paragraphs, verbatim, for the drafter to assess one by one."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from careflow.models.prior_auth import EvidenceRequest, OrderInfo

CRITERION = re.compile(r"^\s*Criterion\s+(\d+)\s*:", re.IGNORECASE)
POLICY_TYPES = ("payer_policy",)
GUIDELINE_TYPES = ("guideline", "protocol", "formulary")


class PolicyChunk(Protocol):
    """What a retrieved knowledge-base chunk offers (careflow.kb.store.RetrievedChunk)."""

    @property
    def document_id(self) -> str: ...
    @property
    def document_title(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def text(self) -> str: ...


C = TypeVar("C", bound=PolicyChunk)


@dataclass(frozen=True)
class PolicyCriteria(Generic[C]):
    document: str | None = None  # "document_id@vN" of the policy that covers the item
    criteria: list[str] = field(default_factory=list)  # in the policy's order, labels removed
    chunks: list[C] = field(default_factory=list)  # the policy's chunks that hold criteria


def criteria_of(text: str) -> list[tuple[int, str]]:
    """`Criterion N:` paragraphs of a payer policy chunk with their numbers, verbatim after the label.

    A criterion runs from its line to the next criterion or blank line (a chunk may join paragraphs
    with a single newline)."""
    out: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        m = CRITERION.match(line)
        if m:
            current = [line.strip()]
            out.append((int(m.group(1)), current))
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line.strip())
    # The label is the policy's numbering, not part of the criterion the drafter assesses.
    return [(n, CRITERION.sub("", " ".join(parts), count=1).strip()) for n, parts in out]


def names_item(title: str, requested_item: str, item_code: str) -> bool:
    """A payer policy covers the order's item when its title names the item or its code."""
    low = title.lower()
    name = requested_item.split(" (", 1)[0].lower()
    return item_code.lower() in low or (bool(name) and name in low)


def policy_criteria(chunks: Sequence[C], requested_item: str, item_code: str) -> PolicyCriteria[C]:
    """The criteria of the best-ranked policy that names the item, gathered from all its retrieved
    chunks and numbered as the policy numbers them (a criterion repeated in two chunks counts once)."""
    covering = [c for c in chunks if names_item(c.document_title, requested_item, item_code)]
    if not covering:
        return PolicyCriteria()
    policy = covering[0]
    same = [c for c in covering if c.document_id == policy.document_id and c.version == policy.version]
    numbered = dict(sorted({n: t for c in same for n, t in criteria_of(c.text)}.items()))
    return PolicyCriteria(
        document=f"{policy.document_id}@v{policy.version}",
        criteria=list(numbered.values()),
        chunks=[c for c in same if criteria_of(c.text)],
    )


def policy_query(requested_item: str, item_code: str, diagnoses: Sequence[str]) -> str:
    return f"prior authorization coverage criteria for {requested_item} {item_code}; {'; '.join(diagnoses)}"


def guideline_query(requested_item: str, diagnoses: Sequence[str]) -> str:
    return f"{requested_item} for {'; '.join(diagnoses)}: indications and evidence"


def evidence_request(tenant_id: str, order: OrderInfo) -> EvidenceRequest:
    """What the knowledge base is asked for: the order's item and the displays of its diagnoses."""
    return EvidenceRequest(
        tenant_id=tenant_id,
        requested_item=order.requested_item,
        item_code=order.item.code,
        diagnoses=[d.display or d.code for d in order.diagnoses],
    )
