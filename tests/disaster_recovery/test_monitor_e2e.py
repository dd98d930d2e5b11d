"""The health monitor and the inference tier's failover on the dev server, with their real activities:
a self-hosted OpenAI-compatible server (`careflow serve-llm`'s app over real HTTP) stopped, the monitor
raising the alarm, DRFailoverWorkflow holding its breaker so the real gateway answers its tiers from
the fallback (PHI never to a provider not permitted it), and releasing it when the server is back; and
a primary killed with SIGKILL, failed over by the monitor on its own; and a page that reaches operations
with the database down."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
import pytest_asyncio
from fastapi import FastAPI, Request
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.dr import DrActivities
from activities.platform import PlatformActivities
from careflow.config import Settings
from careflow.idempotency import step_key
from careflow.llm import local_server
from careflow.llm.breaker import BreakerState, CircuitBreaker, Permit
from careflow.llm.config import SELF_HOSTED, GatewayConfig, Target, TierRoute
from careflow.llm.errors import ProvidersUnavailable
from careflow.llm.gateway import Gateway
from careflow.llm.providers.offline import OfflineProvider
from careflow.llm.providers.openai_compatible import OpenAICompatibleProvider
from careflow.llm.teams import Team, TeamStore
from careflow.llm.types import CompletionRequest, Message, Provider, Tier
from careflow.models.dr import FailoverStage, FailoverStatus, StepRequest, workflow_id
from careflow.models.dr_monitor import MonitorInput, MonitorResult
from careflow.net import free_port
from careflow.notify.notifier import Notifier
from starters.clients import dr as client_of
from tests.disaster_recovery.conftest import Pair
from tests.support.serving import serve
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.dr_failover import DRFailoverWorkflow
from workflows.dr_monitor import DRMonitorWorkflow
from workflows.platform_canary import PlatformCanaryWorkflow

pytestmark = pytest.mark.stack  # starts servers of its own

FAST: dict[str, object] = {"dr_failover_after_s": 1.0, "dr_probe_every_s": 0.2}


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    assert p is not None
    yield p
    await p.close()


def ask(phi: bool = False) -> CompletionRequest:
    return CompletionRequest(
        system="You answer briefly.", messages=[Message(role="user", content="Which tier answers?")],
        max_tokens=64, contains_phi=phi,
    )  # fmt: skip


async def test_a_held_breaker_admits_no_probe_and_no_success_closes_it_until_its_holder_releases_it(
    pool: asyncpg.Pool,
) -> None:
    breaker, provider = CircuitBreaker(pool), f"held-{uuid.uuid4().hex[:8]}"
    assert await breaker.hold(provider, "inc-a") == "inc-a"
    assert await breaker.hold(provider, "inc-b") == "inc-a"  # the first incident keeps it
    assert await breaker.acquire(provider, datetime.now(UTC) + timedelta(hours=1)) is None  # past open_s
    await breaker.record_success(Permit(provider, probe=True, had_failures=True))
    assert await breaker.state(provider) is BreakerState.OPEN and (await breaker.held())[provider] == "inc-a"
    assert not await breaker.release(provider, "inc-b")
    assert await breaker.release(provider, "inc-a")
    assert await breaker.state(provider) is BreakerState.CLOSED and provider not in await breaker.held()
    assert await breaker.acquire(provider) is not None


async def test_the_monitor_moves_a_dead_self_hosted_servers_tiers_to_their_fallback_and_back(
    client: Client, task_queue: str, pool: asyncpg.Pool
) -> None:
    port = free_port()
    # No standby: the database is not in question.
    settings = Settings(standby_port=free_port(), dr_failover_after_s=1.0, dr_probe_every_s=0.2)
    async with serve(local_server.app()) as managed:  # the managed API, not permitted PHI
        self_hosted = OpenAICompatibleProvider(f"http://127.0.0.1:{port}", name=SELF_HOSTED, timeout=5)
        providers: dict[str, Provider] = {
            SELF_HOSTED: self_hosted,
            "azure_openai": OpenAICompatibleProvider(managed, name="azure_openai", phi_permitted=False),
            "offline": OfflineProvider(),
        }
        routes = {
            Tier.FRONTIER: TierRoute(primary=Target(provider="offline", model="offline-frontier")),
            Tier.STANDARD: TierRoute(
                primary=Target(provider=SELF_HOSTED, model="offline-standard"),
                fallback=Target(provider="azure_openai", model="offline-standard"),
            ),
            Tier.EFFICIENT: TierRoute(
                primary=Target(provider=SELF_HOSTED, model="offline-efficient"),
                fallback=Target(provider="offline", model="offline-efficient"),
            ),
        }
        gw = Gateway(pool, providers, GatewayConfig(routes=routes, jwt_secret="test-secret"))
        team = f"dr-team-{uuid.uuid4().hex[:8]}"
        await TeamStore(pool).create(
            Team(
                team_id=team,
                monthly_budget_usd=Decimal(100),
                tokens_per_minute=1_000_000,
                phi_permitted=True,
                allowed_tiers=[Tier.FRONTIER, Tier.STANDARD, Tier.EFFICIENT],
            )
        )
        acts = DrActivities(settings, pool, Notifier(pool, None), gateway=lambda: gw)
        async with Worker(
            client, task_queue=task_queue, workflows=[DRMonitorWorkflow, DRFailoverWorkflow],
            activities=acts.all(), workflow_runner=sandbox_runner(),
        ):  # fmt: skip
            async with serve(local_server.app(), port=port):
                _, rec = await gw.complete_with_record(
                    team, "dr-test", Tier.STANDARD, ask(), uuid.uuid4().hex
                )
                assert rec.provider == SELF_HOSTED and not rec.fallback_used
            stopped = datetime.now(UTC)  # the self-hosted server is gone

            monitor = await client.start_workflow(
                DRMonitorWorkflow.run, MonitorInput(watch_minutes=2, search_attributes=False),
                id=f"dr-monitor-{uuid.uuid4().hex[:8]}", task_queue=task_queue,
            )  # fmt: skip
            found: MonitorResult = await monitor.result()
            assert found.outcome == "failover-started" and found.alarm is not None
            assert found.alarm.failed == "inference" and found.alarm.since >= stopped
            assert found.incident is not None
            failover = client.get_workflow_handle_for(DRFailoverWorkflow.run, workflow_id(found.incident))

            async def rerouted() -> FailoverStatus | None:
                st: FailoverStatus = await failover.query(DRFailoverWorkflow.status)
                return st if st.stage is FailoverStage.REROUTED else None

            st = await wait_until(rerouted, what="rerouted")
            assert st.rerouted is not None and st.rerouted.held == [SELF_HOSTED]
            moves = {m.tier: m for m in st.rerouted.moves}
            assert moves["standard"].fallback == "azure_openai" and not moves["standard"].phi
            assert moves["efficient"].fallback == "offline" and moves["efficient"].phi
            assert (await gw.breaker.held()) == {SELF_HOSTED: found.incident}

            # Every gateway reads the hold on its next call: the fallback answers, the server is not tried.
            _, rec = await gw.complete_with_record(team, "dr-test", Tier.STANDARD, ask(), uuid.uuid4().hex)
            assert rec.provider == "azure_openai" and rec.fallback_used
            _, rec = await gw.complete_with_record(
                team, "dr-test", Tier.EFFICIENT, ask(phi=True), uuid.uuid4().hex
            )
            assert rec.provider == "offline" and rec.fallback_used  # a PHI-permitted fallback
            with pytest.raises(ProvidersUnavailable, match="self_hosted: breaker open"):  # never to azure
                await gw.complete(team, "dr-test", Tier.STANDARD, ask(phi=True), uuid.uuid4().hex)

            async with serve(local_server.app(), port=port):  # back
                done = await failover.result()
                assert done.stage is FailoverStage.INFERENCE_RESTORED
                assert (
                    await gw.breaker.held() == {}
                    and await gw.breaker.state(SELF_HOSTED) is BreakerState.CLOSED
                )
                _, rec = await gw.complete_with_record(
                    team, "dr-test", Tier.STANDARD, ask(), uuid.uuid4().hex
                )
                assert rec.provider == SELF_HOSTED and not rec.fallback_used

    row = await pool.fetchrow("SELECT * FROM dr_failovers WHERE incident = $1", found.incident)
    assert (
        row is not None and row["outcome"] == "inference-restored" and row["requested_by"] == "health-monitor"
    )
    gateway = next(r for r in done.recovery if r.feature == "ai-gateway")
    assert gateway.met and 0 < gateway.rto_s < 60 and gateway.rpo == "0 (no data in the inference tier)"
    steps = await pool.fetch(
        "SELECT detail->>'step' AS step FROM audit_events WHERE workflow_id = $1 ORDER BY id", failover.id
    )
    assert [r["step"] for r in steps] == ["assessing", "rerouting", "rerouted", "inference-restored"]
    print(f"\nmeasured: tiers held on their fallback {gateway.rto_s:.2f} s after the first failed probe")


async def test_the_monitor_fails_a_killed_primary_over_on_its_own(client: Client, pair: Pair) -> None:
    settings = pair.settings.model_copy(update={"dr_auto_failover": True, **FAST})
    queue = f"{pair.task_queue}-monitor"
    acts = DrActivities(settings, pair.pool, Notifier(pair.pool, None))
    probe = PlatformActivities(pair.pool, client.data_converter.payload_codec, "dr-monitor").probe
    async with Worker(
        client, task_queue=queue, workflows=[DRMonitorWorkflow, DRFailoverWorkflow, PlatformCanaryWorkflow],
        activities=[*acts.all(), probe], workflow_runner=sandbox_runner(),
    ):  # fmt: skip
        monitor = await client.start_workflow(
            DRMonitorWorkflow.run, MonitorInput(watch_minutes=2, search_attributes=False),
            id=f"dr-monitor-{uuid.uuid4().hex[:8]}", task_queue=queue,
        )  # fmt: skip
        await asyncio.sleep(0.5)  # a few healthy probes first
        pid = pair.primary.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = datetime.now(UTC)
        found: MonitorResult = await monitor.result()

    assert found.outcome == "failed-over" and found.alarm is not None and found.alarm.failed == "database"
    assert found.alarm.automatic and killed - timedelta(seconds=1) <= found.alarm.since <= killed + timedelta(
        seconds=2
    )
    row = await pair.pool.fetchrow("SELECT * FROM dr_failovers WHERE incident = $1", found.incident)
    assert row is not None and row["requested_by"] == "health-monitor" and row["outcome"] == "failed-over"
    assert row["detected_at"] == found.alarm.since  # the RTO runs from the first failed probe
    assert await pair.pool.fetchval("SELECT current_setting('port')::int") == settings.standby_port
    done = await client_of.result(client, workflow_id(found.incident))
    assert done.verified is not None and done.verified.canary_healthy  # its own queue's worker moved too
    print(f"\nmeasured: kill to failed-over by the monitor, first write {row['first_write_at'] - killed}")


async def test_a_page_reaches_the_webhook_with_the_database_down_and_waits_for_it_without_one() -> None:
    got: list[tuple[str, dict[str, str]]] = []
    hook = FastAPI()

    @hook.post("/page")
    async def page(request: Request) -> dict[str, str]:
        got.append((request.headers["idempotency-key"], await request.json()))
        return {}

    dead = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_port()}/careflow", min_size=0)
    settings = Settings(standby_port=free_port())
    req = StepRequest(workflow_id="dr-failover-x", incident="x", url="postgresql://127.0.0.1:1/careflow")
    try:
        async with serve(hook) as root:
            acts = DrActivities(settings, dead, Notifier(dead, f"{root}/page"))
            await ActivityEnvironment().run(acts.page, req)
            failed = req.model_copy(update={"failed": "the old primary is fenced, promoting failed: ..."})
            await ActivityEnvironment().run(acts.page, failed)
        assert got == [
            (step_key("dr-failover-x", "escalate"), {"incident": "x", "awaiting": "approve_failover"}),
            (step_key("dr-failover-x", "failover-failed"), {"incident": "x", "failed": failed.failed}),
        ]
        alone = DrActivities(settings, dead, Notifier(dead, None))
        with pytest.raises(OSError):  # no webhook: retried until the database takes the record
            await ActivityEnvironment().run(alone.page, req)
    finally:
        await dead.close()
