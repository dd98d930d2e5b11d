"""HL7 over MLLP into Temporal for real: the same ORU sent 100 times -> 100 AA, one workflow, one alert."""

from __future__ import annotations

import asyncio

from temporalio.client import Client
from temporalio.worker import Worker

from careflow.hl7.listener import MllpListener, Route
from careflow.hl7.mllp import Frame, MllpFramer, wrap
from careflow.hl7.oru import parse_oru
from careflow.models.lab_alert import PIPELINE, AlertAck
from starters.clients.lab_alert import workflow_starter
from starters.clients.visibility import Listed, list_pipeline
from tests.lab_alert.test_lab_alert_workflow import (
    assess,
    deliver_alert,
    delivered,
    patient_context,
    record_audit,
)
from tests.support.hl7_samples import oru
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.lab_alert import LabResultAlertWorkflow


async def test_100_resends_one_workflow_one_alert(client: Client, task_queue: str) -> None:
    filler = f"FIL-{task_queue[-8:]}"
    message = oru(
        "RESEND-1", filler=filler, results=[("2823-3", "Potassium", "6.9", "mmol/L", "3.5-5.1", "HH")]
    )
    listener = MllpListener({"ORU^R01": Route(parse_oru, workflow_starter(client, task_queue))}, port=0)
    await listener.start()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[LabResultAlertWorkflow],
        activities=[patient_context, assess, deliver_alert, record_audit],
        workflow_runner=sandbox_runner(),
    ):
        reader, writer = await asyncio.open_connection(listener.host, listener.port)
        for _ in range(100):
            writer.write(wrap(message))
        await writer.drain()
        framer, acks = MllpFramer(), []
        while len(acks) < 100:
            data = await asyncio.wait_for(reader.read(65536), timeout=30)
            assert data
            acks += [f.payload for f in framer.feed(data) if isinstance(f, Frame)]
        writer.close()
        assert all(b"MSA|AA|RESEND-1" in a for a in acks)

        ids = [wf.id async for wf in client.list_workflows(f"TaskQueue = '{task_queue}'")]
        assert len(ids) == 1 and ids[0].startswith("lab-alert-")
        key = ids[0].removeprefix("lab-alert-")
        assert filler not in ids[0] and "PAT123" not in ids[0]  # ids carry no identifiers
        await wait_until(lambda: [d for d in delivered if d.startswith(key)], what="the alert")
        # Listed by one visibility query, stage and urgency kept current by the workflow.
        alerted = await wait_listed(client, ids[0], "alerted")
        assert (alerted.priority, alerted.tenant, alerted.status) == ("critical", "default", "RUNNING")
        handle = client.get_workflow_handle_for(LabResultAlertWorkflow.run, ids[0])
        await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by="dr-1"))
        out = await handle.result()
    await listener.close()
    assert [d for d in delivered if d.startswith(key)] == [f"{key}:physician:dr-1"]
    assert out.status.stage == "acknowledged"
    assert listener.stats.accepted == 100
    assert (await wait_listed(client, ids[0], "acknowledged", include_closed=True)).status == "COMPLETED"


async def wait_listed(client: Client, wid: str, stage: str, *, include_closed: bool = False) -> Listed:
    """The alert's row in `careflow alerts list` once visibility shows `stage` (it lags a little)."""

    async def row() -> Listed | None:
        rows = await list_pipeline(client, PIPELINE, include_closed=include_closed, limit=1000)
        return next((r for r in rows if r.workflow_id == wid and r.stage == stage), None)

    found: Listed = await wait_until(row, what=f"{wid} listed as {stage}")
    return found
