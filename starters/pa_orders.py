"""Start the prior-auth workflow for an order: one workflow per order, id `prior-auth-<order id>`.

Every entry point (the EHR's order event `POST /v1/events/orders`, `careflow pa submit|batch`, the
demo, the bench) goes through `start_prior_auth`.  A duplicate event never starts a second workflow:
the start uses the id-conflict policy FAIL and the reuse policy REJECT_DUPLICATE, and the
WorkflowAlreadyStartedError it raises for a running *or* finished workflow means "attach to it" (which
is what USE_EXISTING does too, but this way the caller also learns whether it started one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from careflow import task_queues
from workflows import search_attributes as sa

WORKFLOW_TYPE = "PriorAuthWorkflow"
PIPELINE = "prior-auth"
ORDER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # ids, never names: PHI-free

Priority = Literal["standard", "expedited"]


def workflow_id(order_id: str) -> str:
    return f"prior-auth-{order_id}"


@dataclass(frozen=True)
class Started:
    workflow_id: str
    started: bool  # False: a workflow for this order already existed (running or finished)


async def start_prior_auth(
    client: Client,
    order_id: str,
    *,
    priority: Priority = "standard",
    tenant_id: str = "default",
    task_queue: str = task_queues.MAIN,
) -> Started:
    if not ORDER_ID_RE.match(order_id):
        raise ValueError("order_id must be 1-100 characters [A-Za-z0-9._-]")
    wid = workflow_id(order_id)
    try:
        await client.start_workflow(
            WORKFLOW_TYPE,
            arg={"order_id": order_id, "tenant_id": tenant_id, "priority": priority},
            id=wid,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            # Visible (and listable) from the first moment; the workflow keeps STAGE current.
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.PIPELINE, PIPELINE),
                    SearchAttributePair(sa.STAGE, "received"),
                    SearchAttributePair(sa.TENANT, tenant_id),
                    SearchAttributePair(sa.PRIORITY, priority),
                ]
            ),
        )
    except WorkflowAlreadyStartedError:
        return Started(wid, started=False)
    return Started(wid, started=True)
