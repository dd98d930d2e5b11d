"""Golden-query scoring and the flag rate (careflow/observe/golden.py) with the real embedder: the
same outputs score at the baseline, degraded outputs fall more than 10 % below it and regress."""

from __future__ import annotations

import numpy as np
import pytest

from careflow.finetune.export import export
from careflow.finetune.prep import prompt_for
from careflow.observe.golden import MIN_RESPONSES, FlagRate, GoldenCase, score


def embed(texts: list[str]) -> np.ndarray:
    from careflow.kb.embed import get_embedder

    return get_embedder().matrix(texts)


CASES = [GoldenCase(n.note_id, prompt_for(n), n.text) for n in export(21, 5) if not n.defect]


def test_the_expected_outputs_score_one_and_set_the_baseline() -> None:
    s = score("note_draft", "1", CASES, [c.expected for c in CASES], embed, baseline=None)
    assert s.score == pytest.approx(1.0, abs=1e-4) and not s.regressed and s.n == len(CASES)


def test_a_degraded_model_falls_more_than_ten_percent_below_the_baseline() -> None:
    degraded = ["Patient seen. Plan as discussed." for _ in CASES]
    s = score("note_draft", "2", CASES, degraded, embed, baseline=0.95)
    assert s.drop > 0.10 and s.regressed
    assert len(s.worst) == 5 and all(sim < 0.8 for _, sim in s.worst)
    slightly = [c.expected.replace("Follow up", "Return") for c in CASES]
    assert not score("note_draft", "3", CASES, slightly, embed, baseline=0.95).regressed
    with pytest.raises(ValueError, match="outputs for"):
        score("note_draft", "4", CASES, degraded[:-1], embed, baseline=0.95)


def test_the_flag_rate_is_judged_only_over_enough_responses() -> None:
    assert FlagRate(MIN_RESPONSES, 2).breached  # 4 %
    assert not FlagRate(MIN_RESPONSES * 10, 10).breached  # 2 %: at the limit, not above it
    assert not FlagRate(MIN_RESPONSES - 1, 20).breached  # too few to judge


async def test_a_versions_first_run_is_its_baseline_and_a_retried_run_records_once(database_url: str) -> None:
    import uuid

    from careflow.config import Settings
    from careflow.db.pool import create_pool
    from careflow.observe import runs
    from careflow.observe.golden import GoldenScore

    feature = f"note_draft.t{uuid.uuid4().hex[:8]}"
    pool = await create_pool(Settings())
    try:
        assert await runs.baseline(pool, feature, "3") is None
        first = await runs.record(pool, "wf-1/golden", "shadow", GoldenScore(feature, "3", 60, 0.55, 0.5, ()))
        again = await runs.record(pool, "wf-1/golden", "shadow", GoldenScore(feature, "3", 60, 0.10, 0.5, ()))
        assert again == first and again.score == 0.55  # the retry gets the run recorded first
        await runs.record(
            pool, "wf-2/golden", "schedule", GoldenScore(feature, "3", 60, 0.40, 0.55, (("c", 0.2),))
        )
        assert await runs.baseline(pool, feature, "3") == 0.55
        latest = await runs.recent(pool, feature)
        assert [r["trigger"] for r in latest] == ["schedule", "shadow"] and latest[0]["regressed"]
    finally:
        await pool.close()


def test_the_note_draft_golden_set_is_held_out_from_every_training_export() -> None:
    from careflow.finetune.prep import GOLDEN_EXPORT, golden_cases

    cases = golden_cases(embed)
    assert 50 <= len(cases) <= 100 and len({c.case_id for c in cases}) == len(cases)
    assert all(c.case_id.startswith(f"note-{GOLDEN_EXPORT[0]}-") for c in cases)
    assert all("[" in c.expected for c in cases)  # de-identified: placeholders, never the planted names
