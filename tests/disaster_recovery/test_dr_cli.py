"""`careflow dr status`'s account of a failover: the inference tier's moves and the verification's
golden questions and canary, as an operator reads them."""

from __future__ import annotations

from datetime import UTC, datetime

from careflow.models.dr import (
    Assessment,
    FailoverStage,
    FailoverStatus,
    InferenceSite,
    Rerouted,
    Site,
    TierMove,
    Verified,
)
from starters.cli.dr import describe

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MODELS = "http://127.0.0.1:8012/v1/models"


def test_status_names_each_tier_move_and_what_happens_to_phi() -> None:
    st = FailoverStatus(
        incident="auto-inference-x", stage=FailoverStage.REROUTED, reason="self_hosted down",
        assessment=Assessment(
            failed="inference", primary=Site(url="postgresql://127.0.0.1:55432/careflow", up=True),
            standby=None, lag_bytes=0, synchronous=False,
            inference=[InferenceSite(provider="self_hosted", url=MODELS, up=False)],
        ),
        rerouted=Rerouted(held=["self_hosted"], at=AT, moves=[
            TierMove(tier="standard", provider="self_hosted", fallback="azure_openai", model="gpt-4o-mini",
                     phi=False),
            TierMove(tier="efficient", provider="self_hosted", fallback=None, model=None, phi=False),
        ]),
    )  # fmt: skip
    text = describe(st)
    assert f"inference self_hosted {MODELS}: DOWN" in text
    assert "tier standard: self_hosted -> azure_openai (gpt-4o-mini); PHI waits for the server" in text
    assert "tier efficient: self_hosted -> no fallback: waits" in text
    assert "breakers released" not in text


def test_status_shows_the_golden_questions_and_a_failed_canary_by_queue() -> None:
    st = FailoverStatus(
        incident="x", stage=FailoverStage.VERIFY_FAILED,
        verified=Verified(ok=False, first_write_at=AT, audit_ok=True, audit_rows=12, golden_questions=114,
                          golden_recall=0.991, golden_baseline=None, canary_healthy=False,
                          canary_unreachable={"careflow-gpu": "no worker"}),
    )  # fmt: skip
    text = describe(st)
    assert "golden RAG questions: 114, recall@k 0.991 (no baseline yet)" in text
    assert "platform canary: FAILED careflow-gpu: no worker" in text
