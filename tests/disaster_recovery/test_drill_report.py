"""A drill judged against the objectives, and `careflow dr report`'s lines: pure, no server."""

from __future__ import annotations

from datetime import UTC, datetime

from activities.dr_drill import objectives_met
from careflow.dr.report import Line, render
from careflow.models.dr_drill import DrillChecks


def test_a_restore_from_backups_meets_an_objective_only_within_its_rto_and_rpo() -> None:
    lost_nothing = {o.feature: o.met for o in objectives_met(DrillChecks(restore_s=120.0, data_age_s=0.0))}
    assert lost_nothing["lab-alerts"] and lost_nothing["risk-scoring"]  # 2 min: within 5 min and 24 h
    slow = {o.feature: o.met for o in objectives_met(DrillChecks(restore_s=600.0, data_age_s=0.0))}
    assert not slow["lab-alerts"] and slow["prior-auth"]  # 10 min: beyond lab alerts' 5, within PA's 1 h
    old = {o.feature: o.met for o in objectives_met(DrillChecks(restore_s=60.0, data_age_s=900.0))}
    assert not old["lab-alerts"] and not old["prior-auth"] and old["rag"]  # 15 min lost: RPO 0 missed
    unknown = objectives_met(DrillChecks(restore_s=60.0, data_age_s=None))
    assert not any(o.met for o in unknown)  # an age nobody measured meets no objective


def test_the_report_lists_each_drill_and_failover_with_what_it_missed() -> None:
    at = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
    lines = render([
        Line("drill", "dr-drill-monthly-1", at, "passed", "restored in 2.0 s, data age 0 s", 7, 7),
        Line("failover", "2026-12-06-db", at, "failed-over", "RTO 2.2 s, RPO unknown", 4, 7,
             ["lab-alerts", "prior-auth", "ambient-notes"]),
    ])  # fmt: skip
    assert lines[0].endswith("passed: restored in 2.0 s, data age 0 s; 7/7 features within objectives")
    assert lines[2] == "    missed: lab-alerts, prior-auth, ambient-notes"
    assert render([]) == ["no drill or failover recorded yet: `careflow dr drill` runs one now"]
