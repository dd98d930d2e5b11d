"""The circuit breaker's state is shared through Postgres by separate OS processes: one process's
failures open it for another; of two processes racing at half-open exactly one sends the probe."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from careflow.llm.breaker import CircuitBreaker
from tests.support.breaker_proc import serve_upstream

ROOT = Path(__file__).resolve().parents[2]


async def run_proc(dsn: str, provider: str, url: str, at: datetime, count: int = 1) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.breaker_proc",
        "--dsn",
        dsn,
        "--provider",
        provider,
        "--url",
        url,
        "--at",
        at.isoformat(),
        "--count",
        str(count),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_breaker_transitions_across_two_processes(database_url: str) -> None:
    provider = f"shared-{uuid.uuid4().hex[:8]}"
    t0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
    async with serve_upstream() as up:
        up.default = 503
        # Process 1: five failures within a minute open the breaker.
        first = await run_proc(database_url, provider, up.url, t0, count=5)
        assert first == {"outcome": ["failed"] * 5, "state": "open"}
        # Process 2 (a different OS process) sees it open and never calls the provider.
        second = await run_proc(database_url, provider, up.url, t0 + timedelta(seconds=30), count=2)
        assert second == {"outcome": ["refused", "refused"], "state": "open"}
        assert len(up.requests) == 5

        # 60 s after opening the provider has recovered; two processes race for the single probe.
        # The probe's call is held in flight, so the other process asks while the breaker is half-open.
        up.default, up.gate = "ok", asyncio.Event()
        half_open_at = t0 + timedelta(seconds=4 + 60)
        racers = [
            asyncio.create_task(run_proc(database_url, provider, up.url, half_open_at)) for _ in range(2)
        ]
        first_done, _ = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        assert [t.result() for t in first_done] == [{"outcome": ["refused"], "state": "half_open"}]
        up.gate.set()
        results = [await t for t in racers]
        assert sorted(str(r["outcome"]) for r in results) == [str(["probe-succeeded"]), str(["refused"])]
        assert len(up.requests) == 6

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        assert str(await CircuitBreaker(pool).state(provider)) == "closed"
    finally:
        await pool.close()


async def test_a_failed_probe_in_one_process_reopens_for_the_other(database_url: str) -> None:
    provider = f"shared-{uuid.uuid4().hex[:8]}"
    t0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
    async with serve_upstream() as up:
        up.default = 529
        assert (await run_proc(database_url, provider, up.url, t0, count=5))["state"] == "open"
        probe = await run_proc(database_url, provider, up.url, t0 + timedelta(seconds=65))
        assert probe == {"outcome": ["probe-failed"], "state": "open"}
        # The failed probe re-opened it for a full period: 59 s later still refused, 60 s later a probe.
        later = await run_proc(database_url, provider, up.url, t0 + timedelta(seconds=65 + 59))
        assert later["outcome"] == ["refused"]
        up.default = "ok"
        again = await run_proc(database_url, provider, up.url, t0 + timedelta(seconds=65 + 60))
        assert again == {"outcome": ["probe-succeeded"], "state": "closed"}
