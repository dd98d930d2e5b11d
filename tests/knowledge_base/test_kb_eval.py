# ruff: noqa: F811  (pytest fixtures imported from tests.support.kb)
"""Regression floors of the query path on the shipped evaluation sets (careflow/kb/eval/).

Floors sit just under the figures reached when they were set (recall@5 0.991, MRR 0.908, citation
accuracy 0.939, paraphrase hit rate 10 % with no false hit at 0.95): a change that loses retrieval
quality or lets a distractor through the cache fails here.  `careflow kb eval` prints the same figures.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

from careflow.config import Settings
from careflow.kb import evaluation as ev
from careflow.kb.rag import RagService
from careflow.kb.settings import KbSettings
from careflow.llm.gateway import Gateway
from tests.support.kb import ROOT, StarterKb, kb_pool, starter_kb  # noqa: F401

RECALL_AT_5_FLOOR = 0.97
MRR_FLOOR = 0.88
CITATION_ACCURACY_FLOOR = 0.90
PARAPHRASE_HIT_RATE_FLOOR = 0.075
FALSE_HIT_RATE_CEILING = 0.01  # the bound at the default settings


def test_the_evaluation_sets_cover_what_they_must() -> None:
    golden, pairs = ev.load_golden(), ev.load_pairs()
    assert len(golden) >= 60 and all(item.expected for item in golden)
    kinds = Counter(p.kind for p in pairs)
    assert kinds["paraphrase"] >= 30 and kinds["distractor"] >= 30
    assert {"negation", "population"} <= {p.distractor_type for p in pairs if p.kind == "distractor"}


async def test_retrieval_holds_recall_and_mrr(starter_kb: StarterKb) -> None:
    report = await ev.evaluate_retrieval(starter_kb.pool, ev.load_golden(), tenant_id=starter_kb.tenant_id)
    print(f"recall@5={report.recall_at_k:.3f} MRR={report.mrr:.3f} misses={report.misses}")
    assert report.recall_at_k >= RECALL_AT_5_FLOOR, report.misses
    assert report.mrr >= MRR_FLOOR


async def test_answers_cite_expected_sections(starter_kb: StarterKb) -> None:
    pool = starter_kb.pool
    service = RagService(
        pool, Gateway.from_settings(pool, Settings()), settings=KbSettings(cache_enabled=False)
    )
    report = await ev.evaluate_answers(service, ev.load_golden(), tenant_id=starter_kb.tenant_id)
    print(f"citation accuracy={report.citation_accuracy:.3f} answered={report.answered}/{report.questions}")
    assert report.answered == report.questions, report.unanswered  # every golden question has an answer
    assert report.citation_accuracy >= CITATION_ACCURACY_FLOOR, report.wrong_citations
    assert 2 <= report.mean_citations <= 3


def test_cache_false_hits_stay_under_one_percent_at_the_default_threshold() -> None:
    threshold = KbSettings().cache_threshold
    assert threshold == 0.95
    report = ev.evaluate_cache(ev.load_pairs(), (0.85, 0.90, threshold))
    rows = {row.threshold: row for row in report.rows}
    default = rows[threshold]
    print(f"hit rate={default.hit_rate:.3f} false-hit rate={default.false_hit_rate:.3f}")
    assert default.false_hit_rate <= FALSE_HIT_RATE_CEILING, report.false_hit_ids[threshold]
    assert default.hit_rate >= PARAPHRASE_HIT_RATE_FLOOR
    # The guard is what keeps distractors out: similarity alone would have served some of them.
    assert default.similarity_only_false_hits > default.false_hits
    assert rows[0.85].false_hit_rate <= FALSE_HIT_RATE_CEILING  # even at a lax threshold


def test_kb_eval_command_reports_the_figures(starter_kb: StarterKb) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "starters", "kb", "eval", "--tenant", starter_kb.tenant_id, "--no-answers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for figure in ("recall@5", "MRR", "paraphrase hit rate", "0.95 *"):
        assert figure in proc.stdout, proc.stdout
