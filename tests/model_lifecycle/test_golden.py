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
