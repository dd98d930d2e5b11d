"""One way to start a workflow whose id is a business key (`lab-alert-<result>`, `prior-auth-<order>`).

A duplicate event must never start a second workflow, and a resend must recover a lost one:

- a run with that id is **running**: nothing starts; the caller attaches to it;
- the last run **completed**: nothing starts; the event was handled;
- the last run **failed, was terminated, cancelled or timed out**: a new run starts (reuse policy
  ALLOW_DUPLICATE_FAILED_ONLY), so resending the event is how an operator recovers it.

`start_keyed` returns whether this call started a run.  Every pipeline's event entry point uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.client import Client
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError


@dataclass(frozen=True)
class Started:
    workflow_id: str
    started: bool  # False: a run with this id is running or has completed (the event attached)


async def start_keyed(
    client: Client,
    workflow: Any,
    arg: Any,
    *,
    id: str,
    task_queue: str,
    search_attributes: TypedSearchAttributes | None = None,
    again_after_close: bool = False,  # True: a request after the run ended starts a new run
) -> bool:
    try:
        await client.start_workflow(
            workflow,
            arg,
            id=id,
            task_queue=task_queue,
            # FAIL, not USE_EXISTING: the error tells the caller a run was there already.
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE
            if again_after_close
            else WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            search_attributes=search_attributes,
        )
    except WorkflowAlreadyStartedError:
        return False
    return True
