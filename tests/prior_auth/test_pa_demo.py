"""`careflow demo prior-auth` and the `careflow pa` commands on the session stack: the dev server, a
careflow worker in-process (the registry's workflows and activities for careflow-main, on a per-test
queue), careflow's API served over HTTP (sandbox EHR + sandbox payer) and the session Postgres.

The synthetic EHR is seeded with a seed of its own, so its order ids (and workflow ids) are this test's.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from careflow import task_queues
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.kb.ingest import discover
from careflow.payer.pas import CLAIM_ID_SYSTEM, claim_identifier
from starters.api.app import create_app
from starters.cli.pa import review
from starters.clients.prior_auth import (
    list_prior_auths,
    status_of,
    submit_all,
    synthetic_orders,
    workflow_id,
)
from starters.clients.seed import load_synthetic_ehr
from starters.clients.updates import ReviewRefused
from starters.demos.prior_auth import STARTER_KB, DemoResult, run_demo
from tests.support.serving import serve
from tests.support.wait import wait_until
from workers.registry import ProcessClients, activities_for, sandbox_runner, workflows_for

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = 12


def demo_seed() -> int:
    """A seed nobody else uses, whose EHR has at least four PA orders, one decided at once by the payer."""
    rng = random.Random()  # noqa: S311 - picks a test seed, nothing secret
    while True:
        seed = rng.randint(10_000, 99_999)
        orders = [o.order_id for o in synthetic_orders(seed, PATIENTS)]
        if len(orders) >= 4 and any(not o.endswith("total_knee_arthroplasty") for o in orders):
            return seed


@dataclass
class Stack:
    settings: Settings
    client: Client
    task_queue: str
    seed: int
    kb_folder: Path


def policies_folder(tmp: Path) -> Path:
    """The starter knowledge base's payer policies (what the criteria come from), in a folder of the
    test's own, so its ingest workflow (one per tenant and folder) is the test's too."""
    folder = tmp / "kb"
    folder.mkdir()
    for name in (s.name for s in discover(STARTER_KB) if s.name.startswith("pa-")):
        shutil.copy(STARTER_KB / name, folder / name)
    return folder


@pytest_asyncio.fixture
async def stack(database_url: str, client: Client, task_queue: str, tmp_path: Path) -> AsyncIterator[Stack]:
    app = create_app(Settings())
    async with serve(app) as root:
        settings = Settings(fhir_base_url=f"{root}/fhir/r4", payer_base_url=f"{root}/payer/r4")
        seed = demo_seed()
        pool = await create_pool(settings)
        await load_synthetic_ehr(settings, pool, seed, PATIENTS, datetime.now(UTC).date())
        clients = ProcessClients(settings, pool, None, "pa-demo-test-worker")
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=workflows_for(task_queues.MAIN),
            activities=activities_for(task_queues.MAIN, clients),
            workflow_runner=sandbox_runner(),
        )
        async with worker:
            yield Stack(settings, client, task_queue, seed, policies_folder(tmp_path))
        await pool.close()


async def cli(*args: str, exit_code: int = 0) -> str:
    """The `careflow` command in a subprocess; awaited, so this process's worker can answer its queries."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starters",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "250"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == exit_code, err.decode()[-2000:]
    return out.decode()


async def payer_claims(settings: Settings, order_ids: list[str]) -> int:
    pool = await create_pool(settings)
    try:
        keys = [f"{CLAIM_ID_SYSTEM}|{claim_identifier(o)}" for o in order_ids]
        return int(
            await pool.fetchval("SELECT count(*) FROM payer_claims WHERE claim_identifier = ANY($1)", keys)
        )
    finally:
        await pool.close()


async def demo(s: Stack) -> DemoResult:
    return await run_demo(
        s.settings,
        s.client,
        seed=s.seed,
        patients=PATIENTS,
        timeout=240,
        task_queue=s.task_queue,
        kb_folder=s.kb_folder,
    )


async def test_demo_reviews_three_drafts_and_is_idempotent(stack: Stack) -> None:
    s = stack
    first = await demo(s)
    orders = [o.order_id for o in first.orders]
    assert first.started == len(orders)
    stages = {wid: st.stage.value for wid, st in first.statuses.items()}
    acted = dict(first.acted)
    assert len(acted) == 3

    approved = [w for w, a in acted.items() if a.startswith("approve")]
    rejected = [w for w, a in acted.items() if a.startswith("reject")]
    revised = [w for w, a in acted.items() if a.startswith("request_changes")]
    assert len(approved) == len(rejected) == len(revised) == 1
    approved_status = first.statuses[approved[0]]
    # The sandbox payer certifies a draft whose criteria are all met at once, and pends any other.
    all_met = all(c.status == "met" for c in approved_status.criteria)
    assert stages[approved[0]] == ("approved" if all_met else "pended")
    assert approved_status.payer_outcome is not None
    assert approved_status.payer_outcome.outcome == stages[approved[0]]
    assert bool(approved_status.payer_outcome.preauth_ref) == all_met
    assert stages[rejected[0]] == "rejected"
    assert stages[revised[0]] == "awaiting_review" and first.statuses[revised[0]].revision == 1
    waiting = [w for w in stages if w not in acted]
    assert waiting and all(stages[w] == "awaiting_review" for w in waiting)
    # Nothing reached the payer without an approval.
    assert await payer_claims(s.settings, orders) == 1

    again = await demo(s)
    assert again.started == 0
    assert {wid: st.stage.value for wid, st in again.statuses.items()} == stages
    assert again.statuses[revised[0]].revision == 1
    assert all("skipped" in a or "earlier run" in a for a in again.acted.values())
    assert await payer_claims(s.settings, orders) == 1

    # A duplicate order event attaches; a reviewer without the PA role is refused (and audited).
    [dup] = await submit_all(s.client, [orders[0]], task_queue=s.task_queue)
    assert (dup.workflow_id, dup.started) == (workflow_id(orders[0]), False)
    with pytest.raises(ReviewRefused):
        await review(s.settings, s.client, waiting[0], "approve", "Practitioner/not-a-pa-reviewer")

    # `careflow pa list|status` against the same server.
    await wait_until(lambda: _listed(s.client, stages), timeout=30, what="the demo's workflows listed")
    out = await cli("pa", "status", approved[0])
    assert stages[approved[0]] in out and "payer outcome" in out and "DocumentReference/" in out
    status = await status_of(s.client, approved[0])
    for c in status.criteria:  # each verdict is printed (it once vanished as Rich markup)
        assert f"criterion {c.status:8s} {c.criterion[:40]}" in out
    assert waiting[0] in await cli("pa", "list")
    assert "already exists (attached)" in await cli("pa", "submit", "--order", orders[0])
    refused = await cli("pa", "approve", waiting[0], "--reviewer", "Practitioner/nobody", exit_code=1)
    assert "refused" in refused


async def _listed(client: Client, stages: dict[str, str]) -> bool:
    """`pa list` (visibility) shows every workflow of the demo at the stage its `status` query gives."""
    rows = await list_prior_auths(client, include_closed=True, limit=1000)
    return {r.workflow_id: r.stage for r in rows if r.workflow_id in stages} == stages
