"""`careflow hl7 listen` (lab results in over MLLP) and `careflow alerts list|ack` (the clinician side)."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.markup import escape
from temporalio.service import RPCError

from careflow.hl7.listener import MllpListener
from careflow.models.lab_alert import PIPELINE, WORKFLOW_ID_PREFIX, AlertAck
from starters.cli.common import CliError, IdTable, cli_connect, cli_settings, find_workflow, make_console
from starters.clients.visibility import Listed, list_pipeline
from workflows.lab_alert import LabResultAlertWorkflow

hl7_app = typer.Typer(name="hl7", help="HL7 v2 lab results over MLLP.", no_args_is_help=True)
alerts_app = typer.Typer(
    name="alerts", help="Critical lab-result alerts: list and acknowledge.", no_args_is_help=True
)
console = make_console()
ROLES = ("physician", "charge_nurse", "chief")


@hl7_app.command("listen")
def listen(
    port: Annotated[int | None, typer.Option(help="TCP port (default CAREFLOW_HL7_PORT, 2575).")] = None,
) -> None:
    """Accept HL7 v2 over MLLP (each pipeline's message types); ACK each message once its work is started."""
    from workers.pipelines import hl7_routes  # the pipelines declare their routes (and this command)

    settings = cli_settings()

    async def run() -> None:
        client = await cli_connect(settings, identity="careflow-hl7-listener")
        host, at = settings.hl7_host, port or settings.hl7_port
        listener = MllpListener(
            hl7_routes(client), host=host, port=at, max_frame=settings.hl7_max_frame_bytes
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
    """Lab-alert workflows (open and failed ones by default): stage, urgency, Web UI link.

    One visibility query (CareflowPipeline="lab-alert"); a failed run is listed until its result is
    resent.  `temporal workflow query -w <id> --type status` shows who was paged and when."""
    settings = cli_settings()

    async def run() -> list[Listed]:
        return await list_pipeline(await cli_connect(settings), PIPELINE, include_closed=all_, limit=limit)

    rows = asyncio.run(run())
    table = IdTable("workflow id", "stage", "urgency", "tenant", "Web UI", ids=("workflow id", "Web UI"))
    for r in rows:
        stage = r.stage if r.open or r.status == "COMPLETED" else f"{r.status.lower()} (resend to recover)"
        table.add_row(
            escape(r.workflow_id), stage, r.priority, r.tenant, escape(settings.workflow_url(r.workflow_id))
        )
    more = "" if all_ else " open or failed (`careflow alerts list --all` includes closed ones)"
    console.print(table if rows else f"no alerts{more}")


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
