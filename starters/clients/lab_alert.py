"""HL7 MLLP -> Temporal: one LabResultAlertWorkflow per result, id `lab-alert-<result key>`.

The listener ACKs only after `accept` returns, and `accept` returns only once every result of the
message has a workflow running or completed: a resend maps to the same id and starts nothing new,
unless the earlier run failed or was terminated, when the resend starts it again (keyed_start).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from temporalio.client import Client

from careflow import task_queues
from careflow.hl7.listener import Route
from careflow.hl7.oru import OruMessage, parse_oru
from careflow.labs.normalise import results_from_oru
from careflow.models.lab_alert import PIPELINE, LabAlertInput, LabAlertStage, workflow_id
from careflow.security.logging import get_logger
from starters.clients.keyed_start import start_keyed
from workflows import search_attributes as sa
from workflows.lab_alert import LabResultAlertWorkflow

log = get_logger("careflow.hl7.bridge")


def oru_route(client: Client) -> Route[OruMessage]:
    """ORU^R01 over MLLP: one lab-alert workflow per result (declared in workers/pipelines.py)."""
    return Route(parse_oru, workflow_starter(client))


def workflow_starter(
    client: Client, task_queue: str = task_queues.MAIN, tenant_id: str = "default"
) -> Callable[[OruMessage], Awaitable[None]]:
    async def accept(msg: OruMessage) -> None:
        for result in results_from_oru(msg, datetime.now(UTC)):
            wid = workflow_id(result.result_key)
            started = await start_keyed(
                client,
                LabResultAlertWorkflow.run,
                LabAlertInput(result=result, tenant_id=tenant_id),
                id=wid,
                task_queue=task_queue,
                search_attributes=sa.at_start(PIPELINE, LabAlertStage.RECEIVED.value, tenant_id),
            )
            log.info(
                "lab result accepted", workflow_id=wid, control_id=msg.header.control_id, started=started
            )

    return accept
