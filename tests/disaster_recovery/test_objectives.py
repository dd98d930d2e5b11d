"""The recovery objectives table (seed P20): every careflow pipeline's feature has one, and a measured
recovery is judged against it."""

from __future__ import annotations

from datetime import timedelta

from careflow.dr.objectives import BY_FEATURE, OBJECTIVES
from workers.pipelines import PIPELINES

# The features the table names for each pipeline (the platform canary has no users).
FEATURE_OF = {
    "lab-alert": "lab-alerts",
    "prior-auth": "prior-auth",
    "kb-refresh": "rag",
    "ambient": "ambient-notes",
    "readmission": "risk-scoring",
    "model-promotion": "model-promotion",
}


def test_every_pipeline_with_users_has_objectives_and_each_feature_is_named_once() -> None:
    assert len(BY_FEATURE) == len(OBJECTIVES)
    for p in PIPELINES:
        if p.name not in ("platform-canary", "dr"):  # the DR pipeline serves the others
            assert FEATURE_OF[p.name] in BY_FEATURE, p.name
    assert all(o.rto >= timedelta(0) and o.rpo >= timedelta(0) and o.degradation for o in OBJECTIVES)


def test_a_measured_recovery_meets_its_objective_only_within_both_limits() -> None:
    lab = BY_FEATURE["lab-alerts"]
    assert lab.met(timedelta(seconds=40), timedelta(0))
    assert not lab.met(timedelta(minutes=6), timedelta(0))
    assert not lab.met(timedelta(seconds=40), timedelta(seconds=1))  # a lost critical result fails
