"""`careflow hl7 listen` (lab results in over MLLP) and `careflow alerts list|ack` (the clinician side)."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.markup import escape
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from careflow.hl7.listener import MllpListener
from careflow.models.lab_alert import AlertAck
from starters.cli_common import (
    OPEN_OR_FAILED,
    CliError,
    IdTable,
    cli_connect,
    cli_settings,
    find_workflow,
    make_console,
)
from starters.hl7_bridge import workflow_starter
from workflows.lab_alert import WORKFLOW_ID_PREFIX, LabResultAlertWorkflow

hl7_app = typer.Typer(help="HL7 v2 lab results over MLLP.", no_args_is_help=True)
alerts_app = typer.Typer(help="Critical lab-result alerts: list and acknowledge.", no_args_is_help=True)
console = make_console()
ROLES = ("physician", "charge_nurse", "chief")


@hl7_app.command("listen")
def listen(
    port: Annotated[int | None, typer.Option(help="TCP port (default CAREFLOW_HL7_PORT, 2575).")] = None,
) -> None:
    """Accept ORU^R01 over MLLP; ACK each message once its workflows are started."""
    settings = cli_settings()

    async def run() -> None:
        client = await cli_connect(settings, identity="careflow-hl7-listener")
        host, at = settings.hl7_host, port or settings.hl7_port
        listener = MllpListener(
            workflow_starter(client), host=host, port=at, max_frame=settings.hl7_max_frame_bytes
        )
        try:
            await listener.start()
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{at} ({exc.strerror or exc}); `careflow dev up` runs a listener "
                "already: `careflow dev status`, or pass --port"
            ) from None
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
        client = await cli_connect(settings)
        query = "WorkflowType = 'LabResultAlertWorkflow'"
        if not all_:
            query += f" AND {OPEN_OR_FAILED}"
        table = IdTable(
            "workflow id", "stage", "urgency", "level", "alerted at", "acknowledged by",
            ids=("workflow id", "acknowledged by"),
        )  # fmt: skip
        count = 0
        async for wf in client.list_workflows(query, limit=limit):
            if wf.status not in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
                # Failed or terminated: no status to ask for; resending the result starts it again.
                ended = wf.status.name.lower() if wf.status else "-"
                table.add_row(escape(wf.id), f"{ended} (resend to recover)", "-", "-", "-", "-")
                count += 1
                continue
            st = await client.get_workflow_handle(wf.id).query(LabResultAlertWorkflow.status)
            level = st.deliveries[-1].level if st.deliveries else "-"
            ack = f"{st.acknowledged.by} ({st.acknowledged.role})" if st.acknowledged else "-"
            table.add_row(
                escape(wf.id), st.stage, st.urgency or "-", level, str(st.alerted_at or "-"), escape(ack)
            )
            count += 1
        more = "" if all_ else " open or failed (`careflow alerts list --all` includes closed ones)"
        console.print(table if count else f"no alerts{more}")

    asyncio.run(run())


@alerts_app.command("ack")
def ack(
    workflow_id: Annotated[str, typer.Argument(help="The alert's workflow id (or its result key).")],
    by: Annotated[str, typer.Option(help="Practitioner or user id acknowledging.")],
    role: Annotated[str, typer.Option(help="physician | charge_nurse | chief")] = "physician",
) -> None:
    """Acknowledge an alert (the `acknowledge` signal, as from the Web UI or `temporal workflow signal`)."""
    if role not in ROLES:
        raise typer.BadParameter(" | ".join(ROLES), param_hint="--role")
    settings = cli_settings()

    async def run() -> None:
        client = await cli_connect(settings)
        wid = await find_workflow(
            client,
            workflow_id,
            prefix=WORKFLOW_ID_PREFIX,
            workflow_type="LabResultAlertWorkflow",
            what="lab-alert",
            listing="careflow alerts list --all",
        )
        handle = client.get_workflow_handle_for(LabResultAlertWorkflow.run, wid)
        try:
            await handle.signal(LabResultAlertWorkflow.acknowledge, AlertAck(by=by, role=role))
            status = await handle.query(LabResultAlertWorkflow.status)
        except RPCError as exc:
            raise CliError(
                f"{wid} cannot be acknowledged ({exc.message}); `careflow alerts list --all` shows its stage"
            ) from None
        who = status.acknowledged.by if status.acknowledged else "?"
        console.print(f"{escape(wid)}: {status.stage} (acknowledged by {escape(who)})")

    asyncio.run(run())
