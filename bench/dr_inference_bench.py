"""The inference tier's failover, measured (seed P20): a self-hosted OpenAI-compatible server
(`careflow serve-llm`, its own process) killed with SIGKILL under steady gateway traffic, and brought
back.  Needs the stack after `make run` (its Postgres and Temporal).

Two layers answer, and both are timed from the kill:
- the gateway's circuit breaker: each request that finds the server gone is answered by its tier's
  fallback at once (a managed API, here a second `serve-llm` process named `azure_openai` and not
  permitted PHI), and after 5 failures within the 60 s window the breaker opens and nobody tries it;
- the health monitor: DRMonitorWorkflow raises the alarm after `--failover-after` seconds of failed
  probes, DRFailoverWorkflow holds the breaker (no clinical request probes the dead server), and
  releases it once the server answers again.

PHI requests on a tier whose fallback is not permitted PHI are never sent there: they wait (refused
with a retry-after) and are counted.

    python -m bench.dr_inference_bench --seconds 60 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
from temporalio.worker import Worker

from activities.dr import DrActivities
from careflow.config import load_settings
from careflow.db.pool import create_pool
from careflow.llm.config import SELF_HOSTED, GatewayConfig, Target, TierRoute
from careflow.llm.errors import ProvidersUnavailable
from careflow.llm.gateway import Gateway
from careflow.llm.providers.offline import OfflineProvider
from careflow.llm.providers.openai_compatible import OpenAICompatibleProvider
from careflow.llm.teams import Team, TeamStore
from careflow.llm.types import CompletionRequest, Message, Provider, Tier
from careflow.models.dr import FailoverStage, workflow_id
from careflow.models.dr_monitor import MonitorInput
from careflow.net import free_port
from careflow.notify.notifier import Notifier
from careflow.security.logging import configure_logging
from careflow.security.temporal import connect
from workers.registry import sandbox_runner
from workflows.dr_failover import DRFailoverWorkflow
from workflows.dr_monitor import DRMonitorWorkflow

BREAKER_WINDOW_S = 60.0  # the gateway's default (seed P3): 5 failures in 60 s open it


@dataclass
class Tally:
    answered: dict[str, int] = field(default_factory=dict)  # by provider
    errors: int = 0
    phi_waited: int = 0
    phi_to_unpermitted: int = 0
    worst_ms_after_kill: float = 0.0
    first_fallback_s: float | None = None  # from the kill


async def serve_llm(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starters", "serve-llm", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"http://127.0.0.1:{port}/v1/models")).status_code == 200:
                    return proc
            await asyncio.sleep(0.1)
    proc.kill()
    raise SystemExit(f"careflow serve-llm did not answer on port {port}")


def ask(phi: bool) -> CompletionRequest:
    return CompletionRequest(
        system="Answer briefly.",
        messages=[Message(role="user", content="Status?")],
        max_tokens=32,
        contains_phi=phi,
    )


async def traffic(gw: Gateway, team: str, stop: asyncio.Event, killed: list[float], t: Tally) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        phi = n % 5 == 0  # one request in five carries PHI
        started = time.monotonic()
        try:
            _, rec = await gw.complete_with_record(
                team, "dr-bench", Tier.STANDARD, ask(phi), uuid.uuid4().hex
            )
        except ProvidersUnavailable:
            t.phi_waited += phi
            t.errors += not phi
            await asyncio.sleep(0.2)  # as a caller's retry would
            continue
        provider = rec.provider or "?"
        t.answered[provider] = t.answered.get(provider, 0) + 1
        t.phi_to_unpermitted += phi and rec.provider == "azure_openai"
        if killed:
            t.worst_ms_after_kill = max(t.worst_ms_after_kill, (time.monotonic() - started) * 1000)
            if rec.fallback_used and t.first_fallback_s is None:
                t.first_fallback_s = time.monotonic() - killed[0]
        await asyncio.sleep(0.01)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=60.0, help="the server stays down this long")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--failover-after", type=float, default=30.0, help="the monitor's threshold (s)")
    args = ap.parse_args()
    settings = load_settings().model_copy(
        update={"dr_failover_after_s": args.failover_after, "dr_probe_every_s": 1.0, "dr_auto_failover": True}
    )
    configure_logging("WARNING", settings.log_format)
    port, managed_port = free_port(), free_port()
    server, managed = await serve_llm(port), await serve_llm(managed_port)
    pool = await create_pool(settings)
    providers: dict[str, Provider] = {
        SELF_HOSTED: OpenAICompatibleProvider(f"http://127.0.0.1:{port}", name=SELF_HOSTED, timeout=10),
        "azure_openai": OpenAICompatibleProvider(
            f"http://127.0.0.1:{managed_port}", name="azure_openai", phi_permitted=False, timeout=10
        ),
        "offline": OfflineProvider(),
    }
    routes = {
        tier: TierRoute(
            primary=Target(provider=SELF_HOSTED, model=f"offline-{tier.value}"),
            fallback=Target(provider="azure_openai", model=f"offline-{tier.value}"),
        )
        for tier in Tier
    }
    gw = Gateway(pool, providers, GatewayConfig(routes=routes))
    team = f"dr-bench-{uuid.uuid4().hex[:6]}"
    await TeamStore(pool).create(
        Team(
            team_id=team,
            monthly_budget_usd=Decimal(1000),
            tokens_per_minute=10_000_000,
            phi_permitted=True,
            allowed_tiers=list(Tier),
        )
    )
    client = await connect(settings)
    queue = f"dr-inference-bench-{uuid.uuid4().hex[:6]}"
    tally, stop, killed = Tally(), asyncio.Event(), list[float]()
    try:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[DRMonitorWorkflow, DRFailoverWorkflow],
            activities=DrActivities(settings, pool, Notifier(pool, None), gateway=lambda: gw).all(),
            workflow_runner=sandbox_runner(),
        ):
            monitor = await client.start_workflow(
                DRMonitorWorkflow.run,
                MonitorInput(watch_minutes=10, search_attributes=False),
                id=f"dr-monitor-bench-{uuid.uuid4().hex[:6]}",
                task_queue=queue,
            )
            load = [
                asyncio.create_task(traffic(gw, team, stop, killed, tally)) for _ in range(args.concurrency)
            ]
            await asyncio.sleep(3)
            print(
                f"serving: {sum(tally.answered.values())} answered by {sorted(tally.answered)}; "
                f"killing the self-hosted server (pid {server.pid})",
                flush=True,
            )
            os.kill(server.pid, signal.SIGKILL)
            killed.append(time.monotonic())
            before = dict(tally.answered)
            opened_s = None
            while opened_s is None and time.monotonic() - killed[0] < BREAKER_WINDOW_S:
                if str(await gw.breaker.state(SELF_HOSTED)) == "open":
                    opened_s = time.monotonic() - killed[0]
                await asyncio.sleep(0.02)
            found = await monitor.result()
            alarm_s = time.monotonic() - killed[0]
            failover = client.get_workflow_handle_for(
                DRFailoverWorkflow.run, workflow_id(found.incident or "")
            )
            held_s = None
            while held_s is None and time.monotonic() - killed[0] < args.failover_after + 60:
                if (await gw.breaker.held()).get(SELF_HOSTED):
                    held_s = time.monotonic() - killed[0]
                await asyncio.sleep(0.05)
            await asyncio.sleep(max(0.0, args.seconds - (time.monotonic() - killed[0])))
            down = {p: n - before.get(p, 0) for p, n in tally.answered.items() if n > before.get(p, 0)}
            server = await serve_llm(port)
            back = time.monotonic()
            done = await failover.result()
            released_s = time.monotonic() - back
            await asyncio.sleep(2)
            stop.set()
            await asyncio.gather(*load)
    finally:
        for proc in (server, managed):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await pool.close()

    def s(v: float | None) -> str:
        return "never" if v is None else f"{v:.3f} s"

    print(f"\nself-hosted inference killed -9 under {args.concurrency} concurrent standard-tier callers")
    print(f"  first request answered by the fallback   {s(tally.first_fallback_s)} after the kill")
    print(
        f"  breaker open (5 failures)                {s(opened_s)} after the kill: "
        f"{(opened_s or BREAKER_WINDOW_S) / BREAKER_WINDOW_S:.4f}x of the {BREAKER_WINDOW_S:g} s window"
    )
    print(f"  slowest answer after the kill            {tally.worst_ms_after_kill:.0f} ms")
    print(
        f"  monitor alarm -> failover started        {alarm_s:.1f} s after the kill "
        f"(threshold {args.failover_after:g} s)"
    )
    print(f"  breaker held by {found.incident}  {s(held_s)} after the kill")
    print(f"  server back -> tiers released            {released_s:.1f} s ({done.stage.value})")
    print(f"  answered while down, by provider         {down}")
    print(f"  non-PHI requests failed                  {tally.errors}")
    print(
        f"  PHI requests waiting (fallback not permitted PHI) {tally.phi_waited}; "
        f"sent to a provider not permitted PHI: {tally.phi_to_unpermitted}"
    )
    gateway = next((r for r in done.recovery if r.feature == "ai-gateway"), None)
    if gateway is not None:
        print(
            f"  ai-gateway recorded RTO {gateway.rto_s:.2f} s against {gateway.objective_rto_s:g} s: "
            f"{'met' if gateway.met else 'MISSED'}"
        )
    ok = (
        tally.errors == 0
        and tally.phi_to_unpermitted == 0
        and opened_s is not None
        and done.stage is FailoverStage.INFERENCE_RESTORED
    )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
