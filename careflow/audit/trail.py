"""The Postgres audit trail: append-only, hash-chained `audit_events` (migration 0003_audit.sql).

Each row stores `row_hash = sha256(prev_hash | id | content)`, where content is the canonical JSON of
the row's event fields (`canonical_content`).  The append runs server-side in `audit_append()` under a
transaction-scoped advisory lock, so writers in many processes extend one chain, one round trip each.
`verify` recomputes every hash in id order and names the first row whose content or link is wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from careflow.models.audit import AuditEvent

GENESIS_HASH = "0" * 64

# The hashed fields, in the order of the table.  id, prev_hash and row_hash are the chain itself.
CONTENT_FIELDS = (
    "event_key",
    "event_type",
    "actor",
    "actor_type",
    "action",
    "outcome",
    "patient_id",
    "resource_type",
    "resource_id",
    "request_id",
    "workflow_id",
    "detail",
    "occurred_at",
)

_COLUMNS = ", ".join(("id", *CONTENT_FIELDS, "prev_hash", "row_hash"))


def _utc_iso(ts: datetime) -> str:
    # A naive timestamp is taken as UTC; Postgres keeps microseconds, exactly what isoformat writes.
    aware = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    return aware.isoformat()


def canonical_content(fields: Mapping[str, Any]) -> str:
    """Canonical JSON of a row's event fields: sorted keys, no whitespace, UTC ISO timestamp."""
    doc = {name: fields.get(name) for name in CONTENT_FIELDS}
    occurred = doc["occurred_at"]
    if isinstance(occurred, datetime):
        doc["occurred_at"] = _utc_iso(occurred)
    detail = doc["detail"]
    doc["detail"] = json.loads(detail) if isinstance(detail, str) else dict(detail or {})
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, event_id: int, content: str) -> str:
    """The hash `audit_append()` stores; kept byte-for-byte identical to the SQL expression."""
    return hashlib.sha256(f"{prev_hash}|{event_id}|{content}".encode()).hexdigest()


def event_fields(event: AuditEvent, event_key: str | None = None) -> dict[str, Any]:
    return {
        "event_key": event_key,
        "event_type": event.event_type.value,
        "actor": event.actor,
        "actor_type": event.actor_type,
        "action": event.action.value,
        "outcome": event.outcome.value,
        "patient_id": event.patient_id,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "request_id": event.request_id,
        "workflow_id": event.workflow_id,
        "detail": dict(event.detail),
        "occurred_at": event.occurred_at,
    }


@dataclass(frozen=True)
class AppendResult:
    event_id: int
    inserted: bool  # False: an event with the same event_key was already recorded


class PostgresAuditTrail:
    """AuditSink over Postgres.  Works with the careflow_app role (INSERT/SELECT only)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, event: AuditEvent) -> None:
        await self.append(event)

    async def append(self, event: AuditEvent, *, event_key: str | None = None) -> AppendResult:
        """Append one event; with an `event_key` a repeat returns the first row and appends nothing."""
        content = canonical_content(event_fields(event, event_key))
        row = await self._pool.fetchrow("SELECT event_id, inserted FROM audit_append($1)", content)
        assert row is not None
        return AppendResult(int(row["event_id"]), bool(row["inserted"]))


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows_checked: int
    first_broken_id: int | None = None
    reason: str | None = None
    # Hash of the last intact row: an operator who records it elsewhere can later detect a truncated tail,
    # which a chain cannot reveal by itself.
    head_hash: str | None = None


async def verify(db: asyncpg.Pool | asyncpg.Connection, *, batch: int = 5000) -> VerifyResult:
    """Walk the chain in id order; stop at the first row whose hash or link does not hold."""
    prev_hash = GENESIS_HASH
    last_id = 0
    checked = 0
    while True:
        rows = await db.fetch(
            f"SELECT {_COLUMNS} FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2",  # noqa: S608
            last_id,
            batch,
        )
        if not rows:
            return VerifyResult(ok=True, rows_checked=checked, head_hash=prev_hash if checked else None)
        for row in rows:
            checked += 1
            if row["prev_hash"] != prev_hash:
                return VerifyResult(
                    False, checked, row["id"], "prev_hash does not match the previous row", prev_hash
                )
            if chain_hash(prev_hash, row["id"], canonical_content(row)) != row["row_hash"]:
                return VerifyResult(
                    False, checked, row["id"], "row content does not match its row_hash", prev_hash
                )
            prev_hash = row["row_hash"]
            last_id = row["id"]
