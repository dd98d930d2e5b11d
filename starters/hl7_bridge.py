"""HL7 MLLP -> Temporal: one LabResultAlertWorkflow per result, id `lab-alert-<result key>`.

The listener ACKs only after `accept` returns, and `accept` returns only once every result of the
message has its workflow started or found: a resend (before or after the first workflow finished)
maps to the same id and starts nothing new.
"""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from careflow import task_queues
from careflow.hl7.listener import Accept
from careflow.hl7.oru import OruMessage
from careflow.labs.normalise import results_from_oru
from careflow.models.lab_alert import LabAlertInput
from careflow.security.logging import get_logger
from workflows.lab_alert import LabResultAlertWorkflow, workflow_id

log = get_logger("careflow.hl7.bridge")


def workflow_starter(client: Client, task_queue: str = task_queues.MAIN) -> Accept:
    async def accept(msg: OruMessage) -> None:
        for result in results_from_oru(msg, datetime.now(UTC)):
            wid = workflow_id(result.result_key)
            try:
                await client.start_workflow(
                    LabResultAlertWorkflow.run,
                    LabAlertInput(result=result),
                    id=wid,
                    task_queue=task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            except WorkflowAlreadyStartedError:
                pass  # finished earlier: this is a resend of a result already handled
            log.info("lab result accepted", workflow_id=wid, control_id=msg.header.control_id)

    return accept
