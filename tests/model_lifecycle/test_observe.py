"""AI observability's layers 1 and 2: the Grafana dashboard reads only metrics the gateway exports,
with the feature and the model version as labels; `careflow observe report` aggregates llm_calls and
llm_feedback per day, feature and model version."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.llm.cost import CallRecord, GatewayMetrics
from careflow.observe.report import daily

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "careflow-ai.json"


def test_the_dashboard_reads_only_metrics_the_gateway_exports_by_feature_and_version() -> None:
    metrics = GatewayMetrics()
    rec = CallRecord(
        request_id="r",
        team_id="t",
        use_case="note_draft",
        requested_tier="standard",
        tier="standard",
        model="careflow-note-model/3",
        outcome="provider_timeout",
    )
    metrics.observe(rec)
    families = {m.name for m in metrics.registry.collect()}
    labels = {s.name: set(s.labels) for m in metrics.registry.collect() for s in m.samples}
    assert {"use_case", "model"} <= labels["careflow_gateway_errors_total"]  # errors per feature and version
    assert {"use_case", "model"} <= labels["careflow_gateway_request_seconds_count"]
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", n)
        for e in exprs
        for n in re.findall(r"careflow_[a-z_]+", e)
    }
    assert used and used <= families, used - families
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"]) >= 10


async def test_the_daily_report_aggregates_calls_flags_and_shadow_answers(database_url: str) -> None:
    feature = f"note_draft.r{uuid.uuid4().hex[:8]}"
    pool = await create_pool(Settings())
    try:
        rows = [  # (request id, model, outcome, finish reason, chars, latency ms)
            ("a", "careflow-note-model/3", "ok", "end_turn", 400, 100.0),
            ("b", "careflow-note-model/3", "ok", "max_tokens", 600, 300.0),
            ("c", "careflow-note-model/3", "provider_timeout", None, None, 30000.0),
            ("a:shadow", "careflow-note-model/4", "shadow", "end_turn", 500, 120.0),
        ]
        for rid, model, outcome, finish, chars, ms in rows:
            await pool.execute(
                """INSERT INTO llm_calls (request_id, team_id, use_case, requested_tier, tier, model, outcome,
                       finish_reason, response_chars, latency_ms) VALUES ($1, 't', $2, 'standard', 'standard',
                       $3, $4, $5, $6, $7)""",
                f"{feature}-{rid}",
                feature,
                model,
                outcome,
                finish,
                chars,
                ms,
            )
        await pool.execute(
            """INSERT INTO llm_feedback (response_id, team_id, use_case, model, flagged, reason)
               VALUES ($1, 't', $2, 'careflow-note-model/3', true, 'inaccurate')""",
            f"{feature}-a",
            feature,
        )
        [champion, shadow] = await daily(pool, 1, feature)
    finally:
        await pool.close()
    assert (champion.model, champion.calls, champion.errors, champion.shadow) == (
        "careflow-note-model/3",
        3,
        1,
        0,
    )
    assert champion.error_rate == pytest.approx(1 / 3) and champion.flagged == 1
    assert champion.mean_chars == 500 and champion.max_tokens_share == 0.5 and champion.p50_ms == 300
    assert champion.disclaimer_share is None and champion.mean_citations is None
    assert (shadow.model, shadow.calls, shadow.errors, shadow.shadow) == ("careflow-note-model/4", 1, 0, 1)
