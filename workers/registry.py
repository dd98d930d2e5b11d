"""What runs where: the workflows and activities each task queue's workers register, from the
pipelines' declarations (workers/pipelines.py).

Every queue also gets the building blocks' activities (the platform probe, so the canary can check
each queue end to end; the audit trail; the AI gateway's draft).  The Replayer uses `ALL_WORKFLOWS`
and `sandbox_runner()` exactly as the workers do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.audit import AuditActivities
from activities.platform import PlatformActivities
from careflow.config import Settings
from careflow.security.temporal import data_converter
from workers.pipeline import ProcessClients
from workers.pipelines import PIPELINES

__all__ = [
    "ALL_WORKFLOWS",
    "ProcessClients",
    "activities_for",
    "activity_slots",
    "replayer",
    "sandbox_runner",
    "workflows_for",
]


def building_block_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return [
        PlatformActivities(c.pool, c.codec, c.identity).probe,
        AuditActivities(c.pool).record,
        c.llm.draft,
    ]


def activities_for(queue: str, clients: ProcessClients) -> list[Callable[..., Any]]:
    own = [fn for p in PIPELINES if p.task_queue == queue for fn in p.activities(clients)]
    own += [fn for p in PIPELINES for aq in [p.queues.get(queue)] if aq for fn in aq.activities(clients)]
    return [*building_block_activities(clients), *own]


def activity_slots(queue: str) -> int | None:
    """How many activities one worker process on `queue` runs at once, where its pipeline says."""
    return next((aq.slots for p in PIPELINES for q, aq in p.queues.items() if q == queue), None)


def workflows_for(queue: str) -> list[type]:
    return [wf for p in PIPELINES if p.task_queue == queue for wf in p.workflows]


ALL_WORKFLOWS: list[type] = sorted({wf for p in PIPELINES for wf in p.workflows}, key=lambda wf: wf.__name__)


def sandbox_runner() -> SandboxedWorkflowRunner:
    # careflow's models are plain pydantic and deterministic: pass them through rather than re-import
    # them per workflow run (the sandbox re-imports everything else).
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "careflow.models", "careflow.task_queues"
        )
    )


def replayer(settings: Settings, workflows: Sequence[type] | None = None) -> Replayer:
    return Replayer(
        workflows=list(workflows or ALL_WORKFLOWS),
        data_converter=data_converter(settings),
        workflow_runner=sandbox_runner(),
    )
