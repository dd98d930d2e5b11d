"""`careflow hl7 listen` (lab results in over MLLP) and `careflow alerts list|ack` (the clinician side)."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from careflow.hl7.listener import MllpListener
from careflow.models.lab_alert import AlertAck
from careflow.security.temporal import connect
from starters.cli_common import cli_settings
from starters.hl7_bridge import workflow_starter
from workflows.lab_alert import LabResultAlertWorkflow

hl7_app = typer.Typer(help="HL7 v2 lab results over MLLP.", no_args_is_help=True)
alerts_app = typer.Typer(help="Critical lab-result alerts: list and acknowledge.", no_args_is_help=True)
console = Console()


@hl7_app.command("listen")
def listen(
    port: Annotated[int | None, typer.Option(help="TCP port (default CAREFLOW_HL7_PORT, 2575).")] = None,
) -> None:
    """Accept ORU^R01 over MLLP; ACK each message once its workflows are started."""
    settings = cli_settings()

    async def run() -> None:
        client = await connect(settings, identity="careflow-hl7-listener")
        listener = MllpListener(
            workflow_starter(client),
            host=settings.hl7_host,
            port=port or settings.hl7_port,
            max_frame=settings.hl7_max_frame_bytes,
        )
        await listener.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await listener.close()

    asyncio.run(run())


@alerts_app.command("list")
def list_alerts(
    all_: Annotated[bool, typer.Option("--all", help="Include closed alerts.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """Lab-alert workflows (open ones by default) with their stage and escalation level."""
    settings = cli_settings()

    async def run() -> None:
        client = await connect(settings)
        query = "WorkflowType = 'LabResultAlertWorkflow'"
        if not all_:
            query += " AND ExecutionStatus = 'Running'"
        table = Table("workflow id", "stage", "urgency", "level", "alerted at", "acknowledged by")
        count = 0
        async for wf in client.list_workflows(query, limit=limit):
            st = await client.get_workflow_handle(wf.id).query(LabResultAlertWorkflow.status)
            level = st.deliveries[-1].level if st.deliveries else "-"
            ack = f"{st.acknowledged.by} ({st.acknowledged.role})" if st.acknowledged else "-"
            table.add_row(wf.id, st.stage, st.urgency or "-", level, str(st.alerted_at or "-"), ack)
            count += 1
        console.print(table if count else "no alerts")

    asyncio.run(run())


@alerts_app.command("ack")
def ack(
    workflow_id: str,
    by: Annotated[str, typer.Option(help="Practitioner or user id acknowledging.")],
    role: Annotated[str, typer.Option(help="physician | charge_nurse | chief")] = "physician",
) -> None:
    """Acknowledge an alert (the `acknowledge` signal, as from the Web UI or `temporal workflow signal`)."""
    settings = cli_settings()

    async def run() -> None:
        client = await connect(settings)
        handle = client.get_workflow_handle_for(LabResultAlertWorkflow.run, workflow_id)
        await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by=by, role=role))
        status = await handle.query(LabResultAlertWorkflow.status)
        who = status.acknowledged.by if status.acknowledged else "?"
        console.print(f"{workflow_id}: {status.stage} (acknowledged by {who})")

    asyncio.run(run())
