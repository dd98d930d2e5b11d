"""Start the prior-auth workflow for an order: one workflow per order, id `prior-auth-<order id>`.

Every entry point (the EHR's order event `POST /v1/events/orders`, `careflow pa submit|batch`, the
demo, the bench) goes through `start_prior_auth`.  A duplicate event never starts a second workflow
and a resend after a failed or terminated run starts it again (starters/keyed_start.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from careflow import task_queues
from careflow.models.prior_auth import PriorAuthInput
from careflow.models.prior_auth import Priority as PriorityLevel
from starters.keyed_start import start_keyed
from workflows import search_attributes as sa
from workflows.prior_auth import PriorAuthWorkflow

WORKFLOW_TYPE = PriorAuthWorkflow.__temporal_workflow_definition.name  # type: ignore[attr-defined]
PIPELINE = "prior-auth"
ORDER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # ids, never names: PHI-free

Priority = Literal["standard", "expedited"]


def workflow_id(order_id: str) -> str:
    return f"prior-auth-{order_id}"


@dataclass(frozen=True)
class Started:
    workflow_id: str
    started: bool  # False: a workflow for this order is running or has completed


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
    started = await start_keyed(
        client,
        PriorAuthWorkflow.run,
        PriorAuthInput(order_id=order_id, tenant_id=tenant_id, priority=PriorityLevel(priority)),
        id=wid,
        task_queue=task_queue,
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
    return Started(wid, started=started)
