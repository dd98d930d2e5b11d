"""Business-keyed starts on the dev server: a duplicate attaches, a resend after a failed or
terminated run starts a new run (lab alert over the HL7 bridge, prior auth over start_prior_auth)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowExecutionStatus

from careflow.hl7.oru import parse_oru
from careflow.labs.normalise import results_from_oru
from careflow.models.lab_alert import workflow_id
from starters.clients.lab_alert import workflow_starter
from starters.clients.prior_auth import list_prior_auths, start_prior_auth
from tests.support.hl7_samples import oru
from tests.support.wait import wait_until

RUNNING = WorkflowExecutionStatus.RUNNING


async def _runs(client: Client, workflow_id: str) -> list[tuple[str, WorkflowExecutionStatus | None]]:
    return [(w.run_id, w.status) async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]


async def _two_runs(client: Client, workflow_id: str) -> list[tuple[str, WorkflowExecutionStatus | None]]:
    runs = await _runs(client, workflow_id)
    return runs if len(runs) == 2 else []


async def test_lab_result_resend_recovers_a_terminated_run(client: Client, task_queue: str) -> None:
    # No worker: the run stays running until terminated, which is all this test needs.
    accept = workflow_starter(client, task_queue)
    message = parse_oru(
        oru(
            "RESEND-T",
            filler=f"FIL-{uuid.uuid4().hex[:8]}",
            results=[("2823-3", "Potassium", "7.1", "mmol/L", "3.5-5.1", "HH")],
        )
    )
    await accept(message)
    [result] = results_from_oru(message, datetime.now(UTC))
    wid = workflow_id(result.result_key)  # the id is the result's key: nothing to list
    handle = client.get_workflow_handle(wid)
    first = (await handle.describe()).run_id

    await accept(message)  # a duplicate while running: attaches
    assert (await handle.describe()).run_id == first

    await handle.terminate(reason="simulated failure")
    await accept(message)  # the resend after a failed/terminated run starts it again
    again = await client.get_workflow_handle(wid).describe()
    assert again.run_id != first and again.status == RUNNING


async def test_prior_auth_resubmit_recovers_a_failed_run_and_attaches_to_a_running_one(
    client: Client, task_queue: str
) -> None:
    order_id = f"ord-keyed-{uuid.uuid4().hex[:8]}"
    first = await start_prior_auth(client, order_id, task_queue=task_queue)
    assert first.started and first.workflow_id == f"prior-auth-{order_id}"
    assert not (await start_prior_auth(client, order_id, task_queue=task_queue)).started

    await client.get_workflow_handle(first.workflow_id).terminate(reason="simulated failure")

    # `careflow pa list` shows the lost run until its order is sent again.
    async def listed() -> bool:
        return any(
            r.workflow_id == first.workflow_id and r.status == "TERMINATED"
            for r in await list_prior_auths(client)
        )

    await wait_until(listed, what="the terminated run in `pa list`")
    again = await start_prior_auth(client, order_id, task_queue=task_queue)
    assert again.started
    # Visibility catches up with the new run within a moment: wait for both runs to be listed.
    runs = await wait_until(
        lambda: _two_runs(client, first.workflow_id), what="both runs listed by visibility"
    )
    assert sorted(s.name for _, s in runs if s) == ["RUNNING", "TERMINATED"]
    await client.get_workflow_handle(first.workflow_id).terminate(reason="test done")
