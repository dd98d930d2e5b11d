"""The gateway answering the note_draft feature as its deployment row says (careflow/llm/gateway.py,
careflow/llm/providers/note_model.py): no champion, the tier route; a champion, its LoRA version on the
base; a canary, the candidate for exactly its requests' hash bucket; shadow, the candidate's answer
recorded beside the champion's and never returned; a rollback, seen by the very next request."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.finetune import deployment, lm
from careflow.finetune.deployment import Stage
from careflow.finetune.registry import NoteModelRegistry
from careflow.finetune.serving import NoteModels, served_model
from careflow.llm.config import GatewayConfig
from careflow.llm.gateway import Gateway
from careflow.llm.providers.note_model import NoteModelProvider
from careflow.llm.providers.offline import OfflineProvider
from careflow.llm.tasks import NoteDraft, NoteDraftInput
from careflow.llm.teams import Team, TeamStore
from careflow.llm.types import Tier
from careflow.phi_store import PhiStore
from tests.support.note_model import TRAIN, examples

NOTE = NoteDraftInput(age=67, sex="female", conditions=["Essential hypertension"], medications=["amlodipine"])


@dataclass
class Served:
    pool: asyncpg.Pool
    gateway: Gateway
    team: str
    versions: tuple[str, str]

    async def ask(self, feature: str, request_id: str) -> tuple[NoteDraft, str]:
        parsed, rec = await self.gateway.run_task(self.team, feature, Tier.STANDARD, NOTE, [], request_id)
        assert isinstance(parsed, NoteDraft)
        return parsed, str(rec.model)


@pytest_asyncio.fixture
async def served(database_url: str, note_base: Path, tmp_path: Path) -> AsyncIterator[Served]:
    settings = Settings()
    pool = await create_pool(settings)
    phi = PhiStore.of(settings)
    registry = NoteModelRegistry(
        settings.registry_store_url, tmp_path / "mlflow", f"note-serve-{uuid.uuid4().hex[:8]}"
    )
    versions = []
    for seed in (1, 2):  # two versions: a champion and a candidate
        adapter = lm.finetune(note_base, examples(), replace(TRAIN, seed=seed)).adapter
        tags = {"adapter_ref": phi.put("note-adapter", adapter).ref, "lora_rank": "4", "lora_alpha": "8"}
        versions.append(registry.register(f"serve-{uuid.uuid4().hex}/register", tags, {}, {}).version)
    providers = {
        "offline": OfflineProvider(),
        "note_model": NoteModelProvider(lambda: NoteModels(note_base, phi, registry)),
    }
    team = f"team-{uuid.uuid4().hex[:8]}"
    await TeamStore(pool).create(
        Team(team_id=team, monthly_budget_usd=Decimal(10), tokens_per_minute=1_000_000, phi_permitted=True)
    )
    try:
        yield Served(
            pool, Gateway(pool, providers, GatewayConfig(jwt_secret="t")), team, (versions[0], versions[1])
        )
    finally:
        await pool.close()


def feature() -> str:
    return f"note_draft.t{uuid.uuid4().hex[:8]}"


async def test_without_a_champion_the_tier_route_answers_then_the_champion_does(served: Served) -> None:
    f, (v1, _) = feature(), served.versions
    note, model = await served.ask(f, "r-0")
    assert model == "offline-standard" and note.note.startswith("SUBJECTIVE:")
    await deployment.promote(served.pool, f, v1, "test", f"{f}/promote")
    note, model = await served.ask(f, "r-1")
    assert model == served_model(v1) and isinstance(note.note, str)
    [row] = await served.pool.fetch(
        "SELECT provider, model, outcome FROM llm_calls WHERE request_id = 'r-1' AND use_case = $1", f
    )
    assert dict(row) == {"provider": "note_model", "model": served_model(v1), "outcome": "ok"}


async def test_a_canary_answers_exactly_its_buckets_and_a_rollback_is_seen_at_once(served: Served) -> None:
    f, (v1, v2) = feature(), served.versions
    await deployment.promote(served.pool, f, v1, "test", f"{f}/promote")
    d = await deployment.stage(served.pool, f, v2, Stage.CANARY, "test", f"{f}/canary", percent=50)
    got = {rid: (await served.ask(f, rid))[1] for rid in (f"c-{i}" for i in range(12))}
    assert got == {rid: served_model(deployment.route(d, rid).serves) for rid in got}
    assert set(got.values()) == {served_model(v1), served_model(v2)}  # both answered
    await deployment.rollback(served.pool, f, v1, "test", "golden regression", f"{f}/rollback")
    assert {(await served.ask(f, rid))[1] for rid in got} == {served_model(v1)}


async def test_in_shadow_the_candidate_answers_beside_the_champion_recorded_never_returned(
    served: Served,
) -> None:
    f, (v1, v2) = feature(), served.versions
    await deployment.promote(served.pool, f, v1, "test", f"{f}/promote")
    await deployment.stage(served.pool, f, v2, Stage.SHADOW, "test", f"{f}/shadow")
    _, model = await served.ask(f, "s-1")
    assert model == served_model(v1)
    rows = await served.pool.fetch(
        "SELECT request_id, model, outcome FROM llm_calls WHERE use_case = $1 ORDER BY id", f
    )
    assert [dict(r) for r in rows] == [
        {"request_id": "s-1", "model": served_model(v1), "outcome": "ok"},
        {"request_id": "s-1:shadow", "model": served_model(v2), "outcome": "shadow"},
    ]


async def test_the_note_model_answers_note_draft_only(served: Served, note_base: Path) -> None:
    from careflow.llm.types import CompletionRequest, Message, ProviderError

    provider = NoteModelProvider(lambda: NoteModels(note_base, None, None))  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="note_draft requests only"):
        await provider.complete(
            CompletionRequest(system="", messages=[Message(role="user", content="hi")]),
            "careflow-note-model/base",
        )
    with pytest.raises(ProviderError, match="no registry"):
        await provider.complete(
            CompletionRequest(system="", messages=[], task="note_draft", task_input=NOTE.model_dump()),
            "careflow-note-model/9",
        )


async def test_the_api_drafts_a_note_whose_id_takes_feedback(database_url: str) -> None:
    import httpx

    from careflow.llm.teams import sign_team_token
    from starters.api.app import create_app
    from tests.support.serving import serve

    settings = Settings()
    pool = await create_pool(settings)
    teams = {}
    for name, phi in (("phi", True), ("nophi", False)):
        teams[name] = f"notes-{name}-{uuid.uuid4().hex[:6]}"
        await TeamStore(pool).create(
            Team(
                team_id=teams[name],
                monthly_budget_usd=Decimal(10),
                tokens_per_minute=100_000,
                phi_permitted=phi,
            )
        )
    secret = GatewayConfig().signing_secret(settings)
    token = {k: sign_team_token(secret, v, ttl_days=1) for k, v in teams.items()}
    f = feature()
    body = {"age": 67, "sex": "female", "conditions": ["Essential hypertension"], "feature": f}
    try:
        async with serve(create_app(settings)) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
            r = await http.post("/v1/notes/draft", headers={"x-api-key": token["phi"]}, json=body)
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["model"] == "offline-standard" and out["note"].startswith("SUBJECTIVE:")
            assert r.headers["request-id"] == out["id"]
            flagged = {"response_id": out["id"], "flag": True, "reason": "inaccurate"}
            assert (
                await http.post("/v1/feedback", headers={"x-api-key": token["phi"]}, json=flagged)
            ).status_code == 201
            bad = await http.post(
                "/v1/notes/draft", headers={"x-api-key": token["phi"]}, json={**body, "age": 200}
            )
            assert bad.status_code == 400 and "age" in bad.text and "200" not in bad.text
            refused = await http.post("/v1/notes/draft", headers={"x-api-key": token["nophi"]}, json=body)
            assert refused.status_code == 403
            assert (await http.post("/v1/notes/draft", json=body)).status_code == 401
        row = await pool.fetchrow("SELECT model, flagged FROM llm_feedback WHERE response_id = $1", out["id"])
        assert row is not None and row["flagged"] and row["model"] == "offline-standard"
    finally:
        await pool.close()
