"""Every careflow pipeline, declared once.

The worker registry (workers/registry.py), the `careflow` CLI, the HTTP API, `careflow dev up`'s
search attributes and Schedules and the compose file's check all loop over `PIPELINES`.  Adding a
pipeline: its own files (ARCHITECTURE.md, "Adding a pipeline") plus one declaration here and one line
in `PIPELINES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client, Schedule
from temporalio.common import SearchAttributeKey

from activities.ambient import AmbientActivities, SpeechActivities
from activities.dr import DrActivities
from activities.dr_backup import BackupActivities
from activities.dr_drill import DrillActivities
from activities.kb import KbActivities
from activities.lab_alert import GatewayUrgencyAssessor, LabAlertActivities
from activities.model_promotion import ModelActivities, PromotionActivities
from activities.prior_auth import PriorAuthActivities
from activities.readmission import ReadmissionActivities
from careflow.hl7.listener import Route
from careflow.kb.embed import get_embedder
from careflow.models import ambient as ambient_models
from careflow.models import dr as dr_models
from careflow.models import kb_refresh as kb_models
from careflow.models import lab_alert as lab_alert_models
from careflow.models import model_promotion as promotion_models
from careflow.models import platform as platform_models
from careflow.models import prior_auth as prior_auth_models
from careflow.models import readmission as readmission_models
from careflow.security.keys import pseudonymizer
from careflow.task_queues import GPU, STT
from starters.api import ambient as ambient_api
from starters.api import discharges as discharges_api
from starters.api import notes as notes_api
from starters.api import orders as orders_api
from starters.api import rag as rag_api
from starters.cli import ambient as ambient_cli
from starters.cli import dr as dr_cli
from starters.cli import kb as kb_cli
from starters.cli import labs as labs_cli
from starters.cli import model as model_cli
from starters.cli import pa as pa_cli
from starters.cli import rag as rag_cli
from starters.cli import risk as risk_cli
from starters.clients import dr as dr_client
from starters.clients import dr_backup as backup_client
from starters.clients import dr_drill as drill_client
from starters.clients import lab_alert as lab_alert_client
from starters.clients import model_promotion as model_client
from starters.clients import readmission as readmission_client
from starters.demos import ambient as ambient_demo
from starters.demos import dr as dr_demo
from starters.demos import lab_alert as lab_alert_demo
from starters.demos import model_promotion as model_demo
from starters.demos import prior_auth as prior_auth_demo
from starters.demos import readmission as readmission_demo
from workers.pipeline import ActivityQueue, Pipeline, ProcessClients
from workflows import search_attributes as sa
from workflows.ambient import AmbientNoteWorkflow
from workflows.dr_backup import BackupWorkflow
from workflows.dr_drill import DRDrillWorkflow
from workflows.dr_failback import DRFailbackWorkflow
from workflows.dr_failover import DRFailoverWorkflow
from workflows.dr_monitor import DRMonitorWorkflow
from workflows.golden_evaluation import GoldenEvaluationWorkflow
from workflows.kb_refresh import KnowledgeBaseRefreshWorkflow
from workflows.lab_alert import LabResultAlertWorkflow
from workflows.model_promotion import ModelPromotionWorkflow
from workflows.model_rollback import ModelRollbackWorkflow
from workflows.platform_canary import PlatformCanaryWorkflow
from workflows.prior_auth import PriorAuthWorkflow
from workflows.readmission import (
    ReadmissionNightlyWorkflow,
    ReadmissionRiskWorkflow,
    ReadmissionTrainingWorkflow,
)


def _no_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return []  # the canary's probe is a building block: every queue has it


def _lab_alert_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    lab = LabAlertActivities(
        c.fhir,
        GatewayUrgencyAssessor(lambda: c.llm.gateway),
        c.notifier,
        c.audit_trail,
        c.identity,
        pseudonymizer(c.settings),
    )
    return [lab.patient_context, lab.assess, lab.deliver_alert, lab.alert_task]


def _prior_auth_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return PriorAuthActivities(c.fhir, c.pool, c.notifier, c.settings).all()


def _readmission_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return ReadmissionActivities(c.fhir, c.pool, lambda: c.registry, c.identity).all()


def _ambient_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return AmbientActivities(c.fhir, c.pool, c.phi_store, c.notifier).all()


def _speech_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return SpeechActivities(c.settings, c.pool, c.phi_store).all()


def _promotion_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return PromotionActivities(c.pool, c.notifier, lambda: c.note_registry).all()


def _model_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return ModelActivities(
        c.settings, c.pool, c.phi_store, lambda: c.note_registry, lambda: c.llm.gateway
    ).all()


def _golden_schedules() -> dict[str, Schedule]:
    """Daily golden queries of every AI feature (seed P5 layer 3): a regression alerts operations."""
    return {
        f"{promotion_models.GOLDEN_SCHEDULE_ID}-{f}": model_client.golden_schedule(f)
        for f in promotion_models.GOLDEN_FEATURES
    }


def _dr_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return [
        *DrActivities(c.settings, c.pool, c.notifier, lambda: c.llm.gateway).all(),
        *BackupActivities(c.settings, c.pool, c.notifier).all(),
        *DrillActivities(c.settings, c.pool, c.notifier, get_embedder).all(),
    ]


def _dr_schedules() -> dict[str, Schedule]:
    return {
        **backup_client.schedules(),
        **drill_client.schedules(),
        **dr_client.monitor_schedules(task_queues()),
    }


def _kb_activities(c: ProcessClients) -> list[Callable[..., Any]]:
    return KbActivities(c.pool).all()


CANARY = Pipeline(
    name=platform_models.PIPELINE,
    summary="Probes every task queue end to end: worker, database, payload codec (`careflow canary`).",
    workflows=[PlatformCanaryWorkflow],
    activities=_no_activities,
)

LAB_ALERT = Pipeline(
    name=lab_alert_models.PIPELINE,
    summary="Critical lab results over HL7 v2 MLLP to the responsible clinician, escalated until acked.",
    workflows=[LabResultAlertWorkflow],
    activities=_lab_alert_activities,
    search_attributes=[sa.PIPELINE, sa.STAGE, sa.TENANT, sa.PRIORITY],
    commands=[labs_cli.hl7_app, labs_cli.alerts_app],
    demo=lab_alert_demo.lab_alert,
    hl7={"ORU^R01": lab_alert_client.oru_route},
)

PRIOR_AUTH = Pipeline(
    name=prior_auth_models.PIPELINE,
    summary="Prior-auth drafts from the chart and payer policy, reviewed by staff, sent to the payer.",
    workflows=[PriorAuthWorkflow],
    activities=_prior_auth_activities,
    search_attributes=[sa.PIPELINE, sa.STAGE, sa.TENANT, sa.PRIORITY, sa.PAYER],
    commands=[pa_cli.pa_app],
    routers=[orders_api.router],
    demo=prior_auth_demo.prior_auth,
)

KNOWLEDGE_BASE = Pipeline(
    name=kb_models.PIPELINE,
    summary="Knowledge-base ingestion and nightly refresh; cited answers (`careflow ask`, /v1/rag/query).",
    workflows=[KnowledgeBaseRefreshWorkflow],
    activities=_kb_activities,
    commands=[kb_cli.kb_app, rag_cli.ask_app],
    routers=[rag_api.router],
)

READMISSION = Pipeline(
    name=readmission_models.PIPELINE,
    summary="30-day readmission risk per discharge (ADT^A03, FHIR event, nightly Schedule); model registry.",
    workflows=[ReadmissionRiskWorkflow, ReadmissionNightlyWorkflow, ReadmissionTrainingWorkflow],
    activities=_readmission_activities,
    search_attributes=[sa.PIPELINE, sa.STAGE, sa.TENANT],
    commands=[risk_cli.risk_app],
    routers=[discharges_api.router],
    hl7={"ADT^A03": readmission_client.adt_route},
    demo=readmission_demo.readmission,
)

AMBIENT = Pipeline(
    name=ambient_models.PIPELINE,
    summary="Badge audio (or a diarized transcript) to a signed SOAP note, coded; consent first.",
    workflows=[AmbientNoteWorkflow],
    activities=_ambient_activities,
    queues={STT: ActivityQueue(_speech_activities, slots=1)},
    search_attributes=[sa.PIPELINE, sa.STAGE, sa.TENANT, sa.SPECIALTY],
    commands=[ambient_cli.ambient_app],
    routers=[ambient_api.router],
    demo=ambient_demo.ambient,
)

MODEL_PROMOTION = Pipeline(
    name=promotion_models.PIPELINE,
    summary="Fine-tune the note model and promote it through gates: review, shadow, canary, golden queries.",
    workflows=[ModelPromotionWorkflow, GoldenEvaluationWorkflow, ModelRollbackWorkflow],
    activities=_promotion_activities,
    queues={GPU: ActivityQueue(_model_activities, slots=1)},
    search_attributes=[sa.PIPELINE, sa.STAGE],
    commands=[model_cli.model_app],
    routers=[notes_api.router],
    demo=model_demo.model_promotion,
    schedules=_golden_schedules,
)

DISASTER_RECOVERY = Pipeline(
    name=dr_models.PIPELINE,
    summary="Backups (nightly; WAL every 15 min), monthly restore drills, failover to the hot standby.",
    workflows=[DRFailoverWorkflow, DRFailbackWorkflow, DRMonitorWorkflow, BackupWorkflow, DRDrillWorkflow],
    activities=_dr_activities,
    search_attributes=[sa.PIPELINE, sa.STAGE],
    commands=[dr_cli.dr_app],
    schedules=_dr_schedules,
    demo=dr_demo.dr,
)

PIPELINES: tuple[Pipeline, ...] = (
    CANARY,
    LAB_ALERT,
    PRIOR_AUTH,
    KNOWLEDGE_BASE,
    READMISSION,
    AMBIENT,
    MODEL_PROMOTION,
    DISASTER_RECOVERY,
)


def task_queues() -> list[str]:
    """Every queue a pipeline runs on: `dev up` starts workers for each."""
    return sorted({q for p in PIPELINES for q in (p.task_queue, *p.queues)})


def search_attributes() -> list[SearchAttributeKey[Any]]:
    """Every search attribute a pipeline sets: `dev up` registers them, the compose file creates them."""
    seen: dict[str, SearchAttributeKey[Any]] = {}
    for p in PIPELINES:
        for key in p.search_attributes:
            seen.setdefault(key.name, key)
    return sorted(seen.values(), key=lambda k: k.name)


def schedules() -> dict[str, Schedule]:
    """Every Schedule a pipeline runs on, by id: `dev up` creates or updates each."""
    return {sid: s for p in PIPELINES for sid, s in p.schedules().items()}


def hl7_routes(client: Client) -> dict[str, Route[Any]]:
    """Every message type the MLLP listener takes, and the route each pipeline declared for it."""
    return {kind: make(client) for p in PIPELINES for kind, make in p.hl7.items()}


def check(pipelines: Sequence[Pipeline] = PIPELINES) -> None:
    """Declarations that collide fail at import, not at run time."""
    names = [p.name for p in pipelines]
    if len(set(names)) != len(names):
        raise ValueError(f"pipeline names repeat: {names}")
    kinds = [kind for p in pipelines for kind in p.hl7]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"HL7 message types routed twice: {kinds}")
    ids = [sid for p in pipelines for sid in p.schedules()]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Schedule ids repeat: {ids}")
    commands = [t.info.name for p in pipelines for t in p.commands if t.info.name]
    if len(set(commands)) != len(commands):
        raise ValueError(f"command groups repeat: {commands}")


check()
