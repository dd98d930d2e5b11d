"""Starting readmission work: a discharge (ADT^A03 over MLLP, the FHIR discharge event, the CLI), a
training run, and the `readmission-nightly` Schedule."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)

from careflow import task_queues
from careflow.hl7.adt import DischargeEvent, parse_adt_a03
from careflow.hl7.listener import Route
from careflow.models.readmission import (
    NIGHTLY_ID_PREFIX,
    NIGHTLY_SCHEDULE_ID,
    PIPELINE,
    DischargeInput,
    DischargeSource,
    NightlyInput,
    ReadmissionStage,
    TrainingInput,
    TrainingStage,
    training_id,
    workflow_id,
)
from careflow.security.logging import get_logger
from starters.clients.keyed_start import Started, start_keyed
from starters.clients.schedules import put_schedule
from workflows import search_attributes as sa
from workflows.readmission import (
    ReadmissionNightlyWorkflow,
    ReadmissionRiskWorkflow,
    ReadmissionTrainingWorkflow,
)

log = get_logger("careflow.readmission.events")

INPATIENT_CLASSES = {"I"}  # PV1-2: only an inpatient stay's discharge is scored
NIGHTLY_CRON = "0 2 * * *"  # 02:00 UTC: the previous 24 h of discharges
CATCHUP_WINDOW = timedelta(hours=12)  # a server down overnight still runs the missed night this morning


async def start_discharge(
    client: Client,
    encounter_id: str,
    source: DischargeSource,
    *,
    tenant_id: str = "default",
    task_queue: str = task_queues.MAIN,
) -> Started:
    """One workflow per discharge: a duplicate event attaches, a resend after a failed run recovers."""
    inp = DischargeInput(encounter_id=encounter_id, source=source, tenant_id=tenant_id)
    wid = workflow_id(inp.encounter_id)
    started = await start_keyed(
        client,
        ReadmissionRiskWorkflow.run,
        inp,
        id=wid,
        task_queue=task_queue,
        search_attributes=sa.at_start(PIPELINE, ReadmissionStage.RECEIVED.value, tenant_id),
    )
    return Started(wid, started)


def adt_route(client: Client, task_queue: str = task_queues.MAIN) -> Route[DischargeEvent]:
    """ADT^A03 over MLLP (declared in workers/pipelines.py): AA once the workflow has started."""

    async def accept(event: DischargeEvent) -> None:
        if event.patient_class not in INPATIENT_CLASSES:
            log.info(
                "discharge not scored: not an inpatient stay",
                control_id=event.header.control_id,
                patient_class=event.patient_class,
            )
            return
        started = await start_discharge(
            client, event.visit_number, DischargeSource.ADT, task_queue=task_queue
        )
        log.info(
            "discharge accepted",
            workflow_id=started.workflow_id,
            control_id=event.header.control_id,
            started=started.started,
        )

    return Route(parse_adt_a03, accept)


async def start_training(client: Client, inp: TrainingInput, *, task_queue: str = task_queues.MAIN) -> str:
    wid = training_id(inp.seed, inp.discharges, uuid.uuid4().hex[:6])
    await client.start_workflow(
        ReadmissionTrainingWorkflow.run,
        inp,
        id=wid,
        task_queue=task_queue,
        search_attributes=sa.at_start(PIPELINE, TrainingStage.TRAINING.value, "default")
        if inp.search_attributes
        else None,
    )
    return wid


def nightly_schedule(
    task_queue: str = task_queues.MAIN, cron: str = NIGHTLY_CRON, inp: NightlyInput | None = None
) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReadmissionNightlyWorkflow.run,
            inp or NightlyInput(),
            id=NIGHTLY_ID_PREFIX.rstrip("-"),  # the Schedule appends the scheduled time
            task_queue=task_queue,
            typed_search_attributes=sa.at_start(PIPELINE, "nightly", (inp or NightlyInput()).tenant_id),
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(note="careflow readmission safety net: scores unscored discharges, checks drift"),
    )


async def ensure_schedule(
    client: Client,
    *,
    task_queue: str = task_queues.MAIN,
    cron: str = NIGHTLY_CRON,
    schedule_id: str = NIGHTLY_SCHEDULE_ID,
) -> bool:
    """Create the nightly Schedule, or bring an existing one to this definition.  True: created."""
    return await put_schedule(client, schedule_id, nightly_schedule(task_queue, cron))
