"""What runs where: the workflows and activities registered on each task queue.

Every queue also gets the platform probe, so the canary can check each one end to end.  The
Replayer uses `ALL_WORKFLOWS` and `sandbox_runner()` exactly as the workers do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio.converter import PayloadCodec
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.audit import AuditActivities
from activities.fhir import fhir_activities, process_fhir_client
from activities.kb import KbActivities
from activities.lab_alert import GatewayUrgencyAssessor, LabAlertActivities
from activities.llm import LlmActivities
from activities.platform import PlatformActivities
from activities.prior_auth import PriorAuthActivities
from careflow import task_queues
from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.notify.notifier import Notifier
from careflow.security.keys import pseudonymizer
from careflow.security.temporal import data_converter
from workflows.kb_refresh import KnowledgeBaseRefreshWorkflow
from workflows.lab_alert import LabResultAlertWorkflow
from workflows.platform_canary import PlatformCanaryWorkflow
from workflows.prior_auth import PriorAuthWorkflow


@dataclass(frozen=True)
class ProcessClients:
    """Built once per worker process, injected into every activity class."""

    settings: Settings
    pool: asyncpg.Pool
    codec: PayloadCodec | None
    identity: str


@dataclass(frozen=True)
class QueueSpec:
    workflows: Sequence[type]
    activities: Callable[[ProcessClients], Sequence[Callable[..., Any]]]


def _platform_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return [PlatformActivities(c.pool, c.codec, c.identity).probe]


def _main_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    # Activity classes of the building blocks, each built once per worker process from `c`.
    llm = LlmActivities(c.pool, c.settings, actor=c.identity)
    fhir = process_fhir_client(c.settings, c.pool, c.identity)
    notifier = Notifier(c.pool, c.settings.notify_webhook_url)
    lab = LabAlertActivities(
        fhir,
        GatewayUrgencyAssessor(lambda: llm.gateway),
        notifier,
        PostgresAuditTrail(c.pool),
        c.identity,
        pseudonymizer(c.settings),
    )
    return [
        AuditActivities(c.pool).record,
        llm.draft,
        *fhir_activities(c.settings, c.pool, c.identity),
        lab.patient_context,
        lab.assess,
        lab.deliver_alert,
        lab.alert_task,
        *KbActivities(c.pool).all(),
        *PriorAuthActivities(fhir, c.pool, notifier, c.settings).all(),
    ]


QUEUES: dict[str, QueueSpec] = {
    task_queues.MAIN: QueueSpec(
        workflows=[
            PlatformCanaryWorkflow,
            LabResultAlertWorkflow,
            PriorAuthWorkflow,
            KnowledgeBaseRefreshWorkflow,
        ],
        activities=_main_activities,
    ),
}

ALL_WORKFLOWS: list[type] = sorted(
    {wf for spec in QUEUES.values() for wf in spec.workflows}, key=lambda wf: wf.__name__
)


def activities_for(queue: str, clients: ProcessClients) -> list[Callable[..., Any]]:
    spec = QUEUES.get(queue)
    own = list(spec.activities(clients)) if spec else []
    return [*_platform_activities(clients), *own]


def workflows_for(queue: str) -> list[type]:
    spec = QUEUES.get(queue)
    return list(spec.workflows) if spec else []


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
