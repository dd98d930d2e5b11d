"""AI gateway overhead and throughput (seed P3: < 10 ms added latency; careflow aims for < 2 ms in-process).

Starts its own embedded Postgres and a local Messages-API upstream, then measures:

1. control plane only: Gateway.complete over an instant in-process provider (team + ledger read,
   rate-limit admission, budget reservation, breaker check, settlement, call record);
2. in-process: Gateway.complete vs AnthropicProvider.complete directly, same local upstream;
3. over HTTP: the anthropic SDK against careflow's API (`careflow api`, a separate process) vs the
   same SDK against the upstream directly;
4. requests/s through careflow's API against an upstream with a fixed 50 ms latency.

Figures are printed with their ratio to the SLA; nothing is asserted.

    .venv/bin/python -m bench.gateway_bench [--n 300] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import anthropic
import asyncpg
import httpx

from careflow.config import Settings
from careflow.db.embedded import throwaway_postgres
from careflow.db.migrate import migrate
from careflow.db.pool import create_pool
from careflow.llm.config import GatewayConfig
from careflow.llm.gateway import Gateway
from careflow.llm.providers.anthropic import AnthropicProvider
from careflow.llm.teams import Team, TeamStore, sign_team_token
from careflow.llm.types import CompletionRequest, CompletionResponse, Message, Tier, Usage
from careflow.net import free_port
from tests.support.fake_upstreams import fake_anthropic

SLA_ADDED_MS = 10.0
TARGET_IN_PROCESS_MS = 2.0
ROOT = Path(__file__).resolve().parent.parent
REQUEST = CompletionRequest(
    system="You are terse.", messages=[Message(role="user", content="Summarise.")], max_tokens=64
)
SECRET = "bench-secret-" + uuid.uuid4().hex


class InstantProvider:
    name = "anthropic"
    phi_permitted = False

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        return CompletionResponse(
            text="ok",
            provider=self.name,
            model=model,
            finish_reason="end_turn",
            usage=Usage(input_tokens=9, output_tokens=1),
        )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def paired(
    direct: Callable[[], Awaitable[object]], via: Callable[[], Awaitable[object]], n: int
) -> tuple[list[float], list[float]]:
    """Alternate the two in blocks so drift (GC, CPU frequency) hits both alike."""
    await timed(direct, 20)
    await timed(via, 20)
    a: list[float] = []
    b: list[float] = []
    for _ in range(n // 20):
        a += await timed(direct, 20)
        b += await timed(via, 20)
    return a, b


def report(title: str, direct: list[float], via: list[float], target_ms: float) -> None:
    d50, d99, v50, v99 = pct(direct, 0.5), pct(direct, 0.99), pct(via, 0.5), pct(via, 0.99)
    print(f"\n{title}")
    print(f"  direct   p50 {d50:7.2f} ms   p99 {d99:7.2f} ms")
    print(f"  gateway  p50 {v50:7.2f} ms   p99 {v99:7.2f} ms")
    print(
        f"  added    p50 {v50 - d50:7.2f} ms   p99 {v99 - d99:7.2f} ms   "
        f"(p50 = {(v50 - d50) / SLA_ADDED_MS:.2f} x the {SLA_ADDED_MS:g} ms SLA, "
        f"{(v50 - d50) / target_ms:.2f} x the {target_ms:g} ms target)"
    )


async def new_team(pool: asyncpg.Pool) -> str:
    team_id = f"bench-{uuid.uuid4().hex[:8]}"
    await TeamStore(pool).create(
        Team(
            team_id=team_id,
            monthly_budget_usd=Decimal(1_000_000),
            tokens_per_minute=2_000_000_000,
            allowed_tiers=list(Tier),
        )
    )
    return team_id


async def in_process(pool: asyncpg.Pool, upstream_url: str, n: int) -> None:
    config = GatewayConfig(routing="seed", jwt_secret=SECRET)
    team = await new_team(pool)

    instant = InstantProvider()
    gw_instant = Gateway(pool, {"anthropic": instant}, config)
    direct, via = await paired(
        lambda: instant.complete(REQUEST, "claude-sonnet-4-6"),
        lambda: gw_instant.complete(team, "bench", Tier.STANDARD, REQUEST, uuid.uuid4().hex),
        n,
    )
    report("1. control plane only (instant in-process provider)", direct, via, TARGET_IN_PROCESS_MS)

    provider = AnthropicProvider("bench-key", base_url=upstream_url)
    gateway = Gateway(pool, {"anthropic": provider}, config)
    direct, via = await paired(
        lambda: provider.complete(REQUEST, "claude-sonnet-4-6"),
        lambda: gateway.complete(team, "bench", Tier.STANDARD, REQUEST, uuid.uuid4().hex),
        n,
    )
    report(
        "2. in-process: Gateway.complete vs AnthropicProvider.complete (local upstream)",
        direct,
        via,
        TARGET_IN_PROCESS_MS,
    )
    await provider.aclose()


def start_api(dsn: str, upstream_url: str, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CAREFLOW_HOME": str(home),
        "CAREFLOW_DATABASE_URL": dsn,
        "CAREFLOW_API_PORT": str(port),
        "CAREFLOW_LOG_LEVEL": "WARNING",
        "CAREFLOW_ANTHROPIC_API_KEY": "bench-key",
        "CAREFLOW_GATEWAY_ROUTING": "seed",
        "CAREFLOW_GATEWAY_ANTHROPIC_BASE_URL": upstream_url,
        "CAREFLOW_GATEWAY_JWT_SECRET": SECRET,
    }
    env.pop("CAREFLOW_OPENAI_BASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "starters", "api"], cwd=ROOT, env=env)
    return proc, f"http://127.0.0.1:{port}"


async def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise SystemExit("careflow api exited")
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)  # polling a starting server: nothing to await but its port
    raise SystemExit("careflow api did not start")


async def over_http(pool: asyncpg.Pool, upstream_url: str, api_url: str, n: int) -> anthropic.AsyncAnthropic:
    team = await new_team(pool)
    direct_client = anthropic.AsyncAnthropic(base_url=upstream_url, api_key="bench-key", max_retries=0)
    careflow = anthropic.AsyncAnthropic(
        base_url=api_url, api_key=sign_team_token(SECRET, team, 1), max_retries=0, timeout=30
    )
    msgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Summarise."}]
    direct, via = await paired(
        lambda: direct_client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=msgs),
        lambda: careflow.messages.create(model="standard", max_tokens=64, messages=msgs),
        n,
    )
    report(
        "3. over HTTP: anthropic SDK -> careflow API -> upstream vs SDK -> upstream",
        direct,
        via,
        SLA_ADDED_MS,
    )
    return careflow


async def throughput(
    careflow: anthropic.AsyncAnthropic, concurrency: int, latency_s: float, seconds: float
) -> None:
    msgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Summarise."}]
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await careflow.messages.create(model="standard", max_tokens=64, messages=msgs)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    ideal = concurrency / latency_s
    print(f"\n4. throughput through careflow's API, upstream {latency_s * 1000:g} ms, {concurrency} clients")
    print(
        f"  {done / elapsed:8.1f} requests/s   ({done} in {elapsed:.1f} s; "
        f"{done / elapsed / ideal:.2f} x the {ideal:.0f}/s of {concurrency} clients at upstream latency)"
    )


async def main(n: int, concurrency: int) -> None:
    async with throwaway_postgres("careflow-gwbench-", "bench") as (root, dsn):
        proc: subprocess.Popen[bytes] | None = None
        try:
            await migrate(dsn)
            # careflow's own pool (its light connection reset is part of what is measured)
            pool = await create_pool(Settings(database_url=dsn, database_pool_min=4, database_pool_max=20))
            async with fake_anthropic() as (upstream_url, upstream):
                await in_process(pool, upstream_url, n)
                proc, api_url = start_api(dsn, upstream_url, root / "home")
                await wait_healthy(api_url, proc)
                careflow = await over_http(pool, upstream_url, api_url, n)
                upstream.latency = 0.05
                await throughput(careflow, concurrency, upstream.latency, seconds=5.0)
            await pool.close()
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency))
