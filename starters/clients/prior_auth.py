"""Start, steer and wait for prior-auth workflows: one workflow per order, id `prior-auth-<order id>`.

Every entry point (the EHR's order event `POST /v1/events/orders`, `careflow pa ...`, the demo, the
bench, the tests) goes through these functions.  A duplicate event never starts a second workflow
and a resend after a failed or terminated run starts it again (starters/clients/keyed_start.py).
Reviews go through the workflow's `review` update; one the validator refuses never reaches the
history, so `submit_review` records the attempt in the audit trail before the caller hears why.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from careflow import task_queues
from careflow.fhir import codes
from careflow.fhir.synthetic import generate_ehr
from careflow.models.prior_auth import (
    PIPELINE,
    PriorAuthInput,
    PriorAuthStatus,
    Priority,
    ReviewOutcome,
    ReviewRequest,
    Stage,
    reviewer_ref,
    workflow_id,
)
from starters.clients.keyed_start import Started, start_keyed
from starters.clients.updates import execute_audited
from starters.clients.visibility import Listed, list_pipeline
from workflows import search_attributes as sa
from workflows.prior_auth import PriorAuthWorkflow

ORDER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # ids, never names: PHI-free
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]+")  # safe to quote in a visibility query


# -- start --------------------------------------------------------------------------------------
async def start_prior_auth(
    client: Client,
    order_id: str,
    *,
    priority: Priority = Priority.STANDARD,
    tenant_id: str = "default",
    task_queue: str = task_queues.MAIN,
) -> Started:
    if not ORDER_ID_RE.match(order_id):
        raise ValueError("order_id must be 1-100 characters [A-Za-z0-9._-]")
    wid = workflow_id(order_id)
    started = await start_keyed(
        client,
        PriorAuthWorkflow.run,
        PriorAuthInput(order_id=order_id, tenant_id=tenant_id, priority=priority),
        id=wid,
        task_queue=task_queue,
        search_attributes=sa.at_start(PIPELINE, Stage.RECEIVED.value, tenant_id, Priority(priority).value),
    )
    return Started(wid, started=started)


async def submit_all(
    client: Client,
    order_ids: Sequence[str],
    *,
    priority: Priority = Priority.STANDARD,
    task_queue: str = task_queues.MAIN,
    concurrency: int = 32,
    on_started: Callable[[Started], None] | None = None,
) -> list[Started]:
    slots = asyncio.Semaphore(concurrency)

    async def one(order_id: str) -> Started:
        async with slots:
            started = await start_prior_auth(client, order_id, priority=priority, task_queue=task_queue)
        if on_started:
            on_started(started)
        return started

    return list(await asyncio.gather(*(one(o) for o in order_ids)))


# -- the synthetic EHR's orders -------------------------------------------------------------------
@dataclass(frozen=True)
class PaOrder:
    order_id: str
    item: str  # human label of the requested drug or service


def item_label(order_id: str) -> str:
    key = order_id.rsplit("-", 1)[-1] if "-" in order_id else order_id
    for kind in (*codes.PRIOR_AUTH_SERVICES, *codes.PRIOR_AUTH_MEDICATIONS):
        if order_id.endswith(f"-{kind}"):
            key = kind
    if key in codes.PRIOR_AUTH_SERVICES:
        primary = codes.PRIOR_AUTH_SERVICES[key][0]
        return f"{primary.display} (CPT {primary.code})"
    if key in codes.MEDICATIONS:
        return codes.MEDICATIONS[key].display
    return key


def synthetic_orders(seed: int, patients: int) -> list[PaOrder]:
    """Every prior-auth order that `careflow seed ehr --seed S --patients N` loads (ids are date-free)."""
    ehr = generate_ehr(seed, patients, datetime.now(UTC).date())
    return [
        PaOrder(f"ord-{seed}-{p.index}-{kind}", item_label(kind))
        for p in ehr.profiles
        for kind in p.prior_auth_orders
    ]


# -- status and waiting ---------------------------------------------------------------------------
async def status_of(client: Client, wid: str) -> PriorAuthStatus:
    return await client.get_workflow_handle(wid).query(PriorAuthWorkflow.status)


async def poll_status(client: Client, wid: str) -> PriorAuthStatus | None:
    """The status, or None while the workflow cannot answer yet (no worker has run its first task, or
    a workflow task is failing and being retried: the worker log says why)."""
    try:
        return await status_of(client, wid)
    except RPCError as exc:
        if exc.status == RPCStatusCode.FAILED_PRECONDITION:
            return None
        raise


async def past_drafting(client: Client, wids: Sequence[str]) -> set[str]:
    """Which of these workflows are past drafting, by their CareflowStage search attribute: one
    visibility query per 100 workflows, where querying each workflow would cost a worker task."""
    done = ", ".join(f"'{s.value}'" for s in Stage if not s.drafting)
    found: set[str] = set()
    for start in range(0, len(wids), 100):
        ids = ", ".join(f"'{w}'" for w in wids[start : start + 100])
        async for wf in client.list_workflows(f"WorkflowId IN ({ids}) AND CareflowStage IN ({done})"):
            found.add(wf.id)
    return found


async def wait_drafts(
    client: Client,
    wids: Iterable[str],
    *,
    timeout: float = 600.0,
    on_ready: Callable[[str, PriorAuthStatus], None] | None = None,
) -> dict[str, PriorAuthStatus]:
    """Wait until every workflow is past drafting (visibility), then read its `status` once."""
    waiting = list(dict.fromkeys(wids))
    if bad := [w for w in waiting if not _PLAIN_ID.fullmatch(w)]:
        raise ValueError(f"workflow ids a visibility query cannot name: {', '.join(bad[:3])}")
    ready: dict[str, PriorAuthStatus] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while waiting:
        for wid in sorted(await past_drafting(client, waiting)):
            status = await poll_status(client, wid)
            if status is not None:
                ready[wid] = status
                if on_ready:
                    on_ready(wid, status)
        waiting = [w for w in waiting if w not in ready]
        if waiting and loop.time() > deadline:
            raise TimeoutError(
                f"{len(waiting)} prior-auth drafts not ready within {timeout:.0f}s "
                "(are workers running? `careflow dev status`; worker logs in .careflow/logs/)"
            )
        if waiting:
            await asyncio.sleep(0.5)
    return ready


async def wait_stage(
    client: Client, wid: str, done: Callable[[PriorAuthStatus], bool], timeout: float = 120.0
) -> PriorAuthStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await poll_status(client, wid)
        if status is not None and done(status):
            return status
        if loop.time() > deadline:
            stage = status.stage.value if status else "not answering queries"
            raise TimeoutError(
                f"{wid} still {stage} after {timeout:.0f}s (are workers running? `careflow dev status`)"
            )
        await asyncio.sleep(0.25)


async def list_prior_auths(client: Client, *, include_closed: bool = False, limit: int = 100) -> list[Listed]:
    """Open prior auths and those that failed (a failed run is work lost until its order is resent)."""
    return await list_pipeline(client, PIPELINE, include_closed=include_closed, limit=limit)


# -- review ---------------------------------------------------------------------------------------
async def submit_review(
    client: Client, workflow_id: str, request: ReviewRequest, audit_pool: asyncpg.Pool
) -> ReviewOutcome:
    """Run the `review` update; on refusal audit the attempt and raise ReviewRefused."""
    outcome: ReviewOutcome = await execute_audited(
        client, workflow_id, PriorAuthWorkflow.review, request, audit_pool=audit_pool,
        actor=reviewer_ref(request.reviewer_id), action=request.action, resource_type="Task",
        what="prior-authorization",
    )  # fmt: skip
    return outcome
