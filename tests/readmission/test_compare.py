"""Champion vs shadow challenger on the same discharges: agreement always, AUROC/Brier/calibration
where the 30-day outcome is known (careflow/readmission/compare.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from careflow.readmission.compare import compare, pairs
from careflow.readmission.store import ScoreRow

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def row(encounter: str, role: str, version: str, p: float, readmitted: bool | None, at: int = 0) -> ScoreRow:
    tier = "high" if p >= 0.3 else "moderate" if p >= 0.1 else "low"
    return ScoreRow(
        encounter_id=encounter, role=role, model_version=version, workflow_id=f"readmission-{encounter}",
        source="adt", patient_id="p", probability=p, tier=tier, factors=[], lace=8, narrative="",
        narrative_engine="", risk_assessment_id=None, task_id=None, discharged_at=T0,
        scored_at=T0 + timedelta(minutes=at), readmitted=readmitted,
    )  # fmt: skip


def cohort(n: int, seed: int) -> list[ScoreRow]:
    """A champion that ranks the outcome well and a challenger that is noise."""
    rng = np.random.default_rng(seed)
    risk = rng.uniform(0.02, 0.6, n)
    y = rng.uniform(size=n) < risk
    rows = []
    for i in range(n):
        rows.append(row(f"e{i}", "champion", "3", float(risk[i]), bool(y[i]) if i % 4 else None))
        rows.append(
            row(f"e{i}", "challenger", "4", float(rng.uniform(0.02, 0.6)), bool(y[i]) if i % 4 else None)
        )
    return rows


def test_the_better_model_shows_and_agreement_is_measured_on_every_discharge() -> None:
    grouped = pairs(cohort(400, 1))
    assert list(grouped) == [("3", "4")]
    c = compare(("3", "4"), grouped[("3", "4")])
    assert c.discharges == 400 and c.with_outcome == 300  # every fourth outcome not known yet
    assert c.champion.auroc is not None and c.challenger.auroc is not None
    assert c.champion.auroc > 0.7 > 0.6 > c.challenger.auroc
    assert c.champion.brier is not None and c.challenger.brier is not None
    assert c.champion.brier < c.challenger.brier
    assert sum(n for _, _, n in c.champion.calibration) == 300
    assert c.rank_correlation is not None and abs(c.rank_correlation) < 0.2
    assert 0 < c.tier_agreement < 1 and c.mean_abs_difference > 0.1


def test_identical_models_agree_fully() -> None:
    rows = [row(f"e{i}", role, v, p, None) for i, p in enumerate([0.05, 0.2, 0.5, 0.7])
            for role, v in (("champion", "3"), ("challenger", "4"))]  # fmt: skip
    c = compare(("3", "4"), pairs(rows)[("3", "4")])
    assert (c.tier_agreement, c.high_agreement, c.mean_abs_difference) == (1.0, 1.0, 0.0)
    assert c.rank_correlation == pytest.approx(1.0)
    assert c.with_outcome == 0 and c.champion.auroc is None and c.champion.calibration == []


def test_a_rescored_discharge_counts_once_and_an_unpaired_one_not_at_all() -> None:
    rows = [
        row("a", "champion", "3", 0.2, None, at=0),
        row("a", "challenger", "4", 0.25, None, at=0),
        row("a", "champion", "3", 0.4, None, at=5),  # scored again later
        row("a", "challenger", "4", 0.45, None, at=5),
        row("b", "champion", "3", 0.1, None),  # no challenger then
    ]
    [(champion, shadow)] = pairs(rows)[("3", "4")]
    assert (champion.probability, shadow.probability) == (0.4, 0.45)
    with pytest.raises(ValueError, match="no discharge was scored by both"):
        compare(("3", "4"), [])
