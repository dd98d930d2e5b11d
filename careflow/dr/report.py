"""`careflow dr report`: every drill and failover against the recovery objectives (seed P20).  A drill
says how long a restore from backups took and how old the restored data was; a failover how long the
features were down and what the standby could have lost."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Line:
    kind: str  # drill, failover
    id: str
    at: datetime
    outcome: str
    detail: str  # restore time and data age, or RTO and RPO
    features_met: int
    features: int
    missed: list[str] = field(default_factory=list)


async def lines(pool: asyncpg.Pool, limit: int = 20) -> list[Line]:
    drills = await pool.fetch(
        """SELECT drill_id, started_at, outcome, failed_check, reason, backup_id, restore_s, data_age_s,
                  objectives FROM dr_drills ORDER BY started_at DESC LIMIT $1""",
        limit,
    )
    failovers = await pool.fetch(
        """SELECT incident, detected_at, outcome, forced, recovery FROM dr_failovers
           ORDER BY detected_at DESC LIMIT $1""",
        limit,
    )
    out = [_drill(r) for r in drills] + [_failover(r) for r in failovers]
    return sorted(out, key=lambda x: x.at, reverse=True)


def _json_list(raw: object) -> list[dict[str, Any]]:
    found = json.loads(raw) if isinstance(raw, str) else raw
    return list(found) if isinstance(found, list) else []


def _judged(raw: object) -> tuple[int, int, list[str]]:
    checks = _json_list(raw)
    missed = [c["feature"] for c in checks if not c["met"]]
    return len(checks) - len(missed), len(checks), missed


def _drill(r: asyncpg.Record) -> Line:
    met, total, missed = _judged(r["objectives"])
    if r["outcome"] == "passed":
        age = "unknown" if r["data_age_s"] is None else f"{r['data_age_s']:.0f} s"
        detail = f"backup {r['backup_id']}: restored in {r['restore_s']:.1f} s, data age {age}"
    else:
        detail = f"failed at {r['failed_check'] or '?'}: {r['reason'] or r['outcome']}"
    return Line("drill", r["drill_id"], r["started_at"], r["outcome"], detail, met, total, missed)


def _failover(r: asyncpg.Record) -> Line:
    met, total, missed = _judged(r["recovery"])
    recovery = _json_list(r["recovery"])
    detail = (
        f"RTO {recovery[0]['rto_s']:.1f} s, RPO {recovery[0]['rpo']}" if recovery else "no recovery measured"
    ) + (" (forced)" if r["forced"] else "")
    return Line("failover", r["incident"], r["detected_at"], r["outcome"], detail, met, total, missed)


def render(found: Sequence[Line]) -> list[str]:
    if not found:
        return ["no drill or failover recorded yet: `careflow dr drill` runs one now"]
    rows = []
    for x in found:
        verdict = f"{x.features_met}/{x.features} features within objectives" if x.features else "not judged"
        rows.append(f"{x.at:%Y-%m-%d %H:%M} {x.kind:8} {x.id}  {x.outcome}: {x.detail}; {verdict}")
        if x.missed:
            rows.append(f"    missed: {', '.join(x.missed)}")
    return rows
