"""Recovery objectives per clinical AI feature (seed P20: define RTO and RPO per feature before the
DR design).  RTO: how long the feature may be unavailable to its users; RPO: how much committed work
it may lose.  The degradation is what users get meanwhile; the failover and the drills measure each
feature against this table and report pass or fail (`careflow dr report`).

A feature whose users never wait on it (an HL7 ACK, a breaker's fallback) has an effective RTO far
below its infrastructure's: what counts is what the clinician sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

ZERO = timedelta(0)
# The golden RAG questions' recall@k that a restored copy (a drill) or a new primary (a failover) may
# lose against the live primary's before the check fails.
GOLDEN_TOLERANCE = 0.05


@dataclass(frozen=True)
class Objective:
    feature: str
    rto: timedelta
    rpo: timedelta
    degradation: str  # what users get while the feature's dependencies are down
    depends_on: tuple[str, ...]  # database, temporal, inference, knowledge-base
    built: bool = True  # False: its objectives are set, nothing measures them yet

    def met(self, measured_rto: timedelta, measured_rpo: timedelta) -> bool:
        return measured_rto <= self.rto and measured_rpo <= self.rpo


OBJECTIVES: tuple[Objective, ...] = (
    Objective(
        "lab-alerts", timedelta(minutes=5), ZERO,
        "the listener ACKs only what Temporal holds (a lab resends the rest); with no AI tier the rules' "
        "finding alerts alone, never later",
        ("temporal", "database"),
    ),
    Objective(
        "prior-auth", timedelta(hours=1), ZERO,
        "orders wait in Temporal; with no AI tier staff get the pre-filled template to complete",
        ("temporal", "database", "inference", "knowledge-base"),
    ),
    Objective(
        "ai-gateway", timedelta(minutes=1), ZERO,
        "the breaker opens and the tier's fallback answers (never a provider not permitted PHI); the "
        "offline engine answers when no provider does",
        ("database", "inference"),
    ),
    Objective(
        "rag", timedelta(minutes=15), timedelta(hours=24),
        "no answer rather than an uncited one: the clinician reads the guideline; the index is rebuilt "
        "from its sources (nightly refresh) or restored from the backup",
        ("database", "inference", "knowledge-base"),
    ),
    Objective(
        "ambient-notes", timedelta(hours=4), ZERO,
        "encounters wait (audio and consent are in the PHI store, encrypted); the clinician writes "
        "the note by hand meanwhile",
        ("temporal", "database", "inference"),
    ),
    Objective(
        "risk-scoring", timedelta(hours=24), timedelta(hours=24),
        "discharges wait in Temporal and are scored when it is back (the nightly batch catches up); "
        "care coordination works from its discharge checklist meanwhile",
        ("temporal", "database"),
    ),
    Objective(
        "model-promotion", timedelta(hours=24), timedelta(hours=24),
        "the champion keeps serving; a saga waits on its timers",
        ("temporal", "database"),
    ),
    Objective(
        "cds-hooks", ZERO, ZERO,
        "not built yet: its hooks will answer empty cards within the EHR's timeout, never an error",
        ("inference",), built=False,
    ),
)  # fmt: skip

BY_FEATURE = {o.feature: o for o in OBJECTIVES}
