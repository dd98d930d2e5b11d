"""The golden sets of the gateway's AI features (careflow/observe/golden/) and their golden runs: the
model.golden activity (ActivityEnvironment) on real Postgres, through the real gateway, with a degraded
model served over real HTTP by a local OpenAI-compatible server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.model_promotion import ModelActivities
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.llm import tasks
from careflow.llm.config import GatewayConfig, Target, TierRoute
from careflow.llm.gateway import Gateway
from careflow.llm.providers.offline import OfflineProvider, draft
from careflow.llm.providers.openai_compatible import OpenAICompatibleProvider
from careflow.llm.types import Tier
from careflow.models.model_promotion import GoldenRequest, GoldenResult
from careflow.observe import golden_sets, runs
from careflow.observe.golden_sets import GOLDEN_USE_CASE
from careflow.phi_store import PhiStore
from tests.support.fake_upstreams import fake_openai

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("feature", golden_sets.FEATURES)
def test_each_set_holds_50_to_100_distinct_cases_the_pipelines_would_ask(feature: str) -> None:
    cases = golden_sets.load(feature)
    assert 50 <= len(cases) <= 100 and len({c.case_id for c in cases}) == len(cases)
    spec = tasks.task_spec(feature)
    assert all(isinstance(c.task_input, spec.input_model) and c.evidence and c.expected for c in cases)
    assert len({c.task_input.model_dump_json() for c in cases}) == len(cases)  # no repeated query


@pytest.mark.parametrize("feature", golden_sets.FEATURES)
def test_the_committed_set_is_what_the_builder_and_the_accepted_engine_make(feature: str) -> None:
    """A change to the builders or to the offline engine shows as a rewritten set in review
    (`python -m careflow.observe.golden_sets`), never as a silent drift of the reference."""
    built = golden_sets.build(feature)
    committed = golden_sets.load(feature)
    assert [c.case_id for c in built] == [c.case_id for c in committed]
    for b, c in zip(built, committed, strict=True):
        assert b.task_input == c.task_input and b.evidence == c.evidence, c.case_id
        assert golden_sets.answer_text(draft(feature, c.task_input.model_dump(), c.evidence)) == c.expected


def test_the_lab_set_covers_every_urgency_and_the_rag_set_its_questions_passages() -> None:
    lab = [c.task_input for c in golden_sets.load("lab_urgency")]
    assert {i.rule_urgency for i in lab if isinstance(i, tasks.LabUrgencyInput)} == {
        "critical",
        "high",
        "low",
    }
    for c in golden_sets.load("rag_answer"):
        assert isinstance(c.task_input, tasks.RagAnswerInput)
        assert set(c.task_input.sources) == {e.id for e in c.evidence}
    with pytest.raises(KeyError, match="no golden set"):
        golden_sets.path_of("note_draft")  # the note model's set comes from a held-out export


DEGRADED = json.dumps(
    {
        "urgency": "critical",
        "clinical_narrative": "Result noted.",
        "suggested_action": "Review.",
        "citations": [],
    }
)


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[object]:
    p = await create_pool(Settings())
    try:
        yield p
    finally:
        await p.close()


def _activities(pool: object, gateway: Gateway) -> ModelActivities:
    s = Settings()
    return ModelActivities(s, pool, PhiStore.of(s), lambda: None, lambda: gateway)  # type: ignore[arg-type, return-value]


async def _golden(acts: ModelActivities, feature: str, key: str, version: str | None = None) -> GoldenResult:
    req = GoldenRequest(feature=feature, version=version, key=key, trigger="manual")
    return await ActivityEnvironment().run(acts.golden, req)


async def test_a_model_swapped_into_the_tier_map_is_judged_against_the_one_that_last_passed(
    pool: object,
) -> None:
    feature = (
        f"lab_urgency.t{uuid.uuid4().hex[:8]}"  # a scope of its own: the session's other runs stay apart
    )
    offline = Gateway(pool, {"offline": OfflineProvider()}, GatewayConfig(jwt_secret="t"))  # type: ignore[arg-type]
    first = await _golden(_activities(pool, offline), feature, f"{feature}/1")
    assert first.version == "offline/offline-efficient" and first.n == 60 and first.baseline is None
    assert first.score == pytest.approx(1.0, abs=1e-3) and not first.regressed  # the reference's own answers

    async with fake_openai(reply_text=DEGRADED) as (url, upstream):
        routes = {Tier.EFFICIENT: TierRoute(primary=Target(provider="azure_openai", model="gpt-degraded"))}
        config = GatewayConfig(jwt_secret="t", routes=routes, azure_openai_phi_permitted=True)
        provider = OpenAICompatibleProvider(url, name="azure_openai", phi_permitted=True)
        swapped = Gateway(pool, {"azure_openai": provider}, config)  # type: ignore[arg-type]
        acts = _activities(pool, swapped)
        second = await _golden(acts, feature, f"{feature}/2")
        with pytest.raises(ApplicationError, match="scored as it serves"):
            await _golden(acts, feature, f"{feature}/3", version="offline/offline-efficient")
        await provider.aclose()
    assert len(upstream.requests) == 60  # pinned: every golden query reached the model under test
    assert second.version == "azure_openai/gpt-degraded" and second.baseline == pytest.approx(first.score)
    assert second.regressed and second.drop > 0.10 and len(second.worst) == 5
    assert await runs.last_passed(pool, feature) == first.version  # type: ignore[arg-type]
    calls = await pool.fetchval(  # type: ignore[attr-defined]
        "SELECT count(*) FROM llm_calls WHERE use_case = $1 AND request_id LIKE $2",
        GOLDEN_USE_CASE,
        f"{feature}/2/%",
    )
    assert calls == 60
