"""`careflow demo lab-alert` (`make demo-lab-alert`), declared by the lab-alert pipeline
(workers/pipelines.py).

Sends a critical potassium for a seeded synthetic patient to the MLLP listener, exactly as a lab
system would, waits until careflow has alerted the responsible physician, and says where to look
and how to acknowledge.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from careflow.config import Settings, load_settings
from careflow.fhir.synthetic import generate_ehr
from careflow.hl7.mllp import Frame, MllpFramer, wrap
from careflow.hl7.oru import parse_oru
from careflow.labs.normalise import results_from_oru
from careflow.models.lab_alert import LabAlertStatus, workflow_id
from careflow.security.logging import configure_logging
from starters.cli.common import STACK_HINT, CliError, cli_connect, make_console
from workflows.lab_alert import LabResultAlertWorkflow

console = make_console()


def critical_potassium(mrn: str, facility: str = "CAREFLOW-LAB") -> bytes:
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    segments = [
        f"MSH|^~\\&|LIS|{facility}|CAREFLOW|HOSPITAL|{now}||ORU^R01^ORU_R01|DEMO{now}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSPITAL^MR",
        f"OBR|1|ORD{now}|FIL{now}^LIS|2823-3^Potassium^LN|||{now}",
        f"OBX|1|NM|2823-3^Potassium [Moles/volume] in Serum or Plasma^LN||6.9|mmol/L|3.5-5.1|HH|||F|||{now}",
    ]
    return ("\r".join(segments) + "\r").encode()


async def _lab_alert(settings: Settings, seed: int, patients: int, timeout: float) -> None:
    ehr = generate_ehr(seed, patients, datetime.now(UTC).date())
    profile = next((p for p in ehr.profiles if p.admissions > 0), ehr.profiles[0])
    message = critical_potassium(profile.mrn)
    [result] = results_from_oru(parse_oru(message), datetime.now(UTC))
    wid = workflow_id(result.result_key)

    try:
        reader, writer = await asyncio.open_connection(settings.hl7_host, settings.hl7_port)
    except OSError:
        raise CliError(
            f"cannot reach the HL7 listener at {settings.hl7_host}:{settings.hl7_port}: {STACK_HINT}"
        ) from None
    writer.write(wrap(message))
    await writer.drain()
    framer = MllpFramer()
    ack: list[Frame] = []
    while not ack:
        data = await asyncio.wait_for(reader.read(65536), timeout=timeout)
        if not data:
            raise CliError(f"the HL7 listener closed the connection without an ACK: {STACK_HINT}")
        ack = [f for f in framer.feed(data) if isinstance(f, Frame)]
    writer.close()
    msa = next(s for s in ack[0].payload.decode().split("\r") if s.startswith("MSA"))
    patient = escape(profile.mrn)
    console.print(
        f"sent ORU^R01 (potassium 6.9 mmol/L, HH) for synthetic patient {patient}: ACK {escape(msa)}"
    )

    client = await cli_connect(settings)
    handle = client.get_workflow_handle_for(LabResultAlertWorkflow.run, wid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await handle.query(LabResultAlertWorkflow.status)
        if status.stage.settled:
            break
        if loop.time() > deadline:
            raise CliError(
                f"{wid} did not alert within {timeout:.0f}s (stage {status.stage}); are workers running? "
                "`careflow dev status`"
            )
        await asyncio.sleep(0.2)
    console.print(alert_summary(settings, wid, status))


def alert_summary(settings: Settings, wid: str, status: LabAlertStatus) -> str:
    """Markup: the workflow id, the link and both commands each whole on its line (never wrapped)."""
    delivery = status.deliveries[-1] if status.deliveries else None
    ui = f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{wid}"
    physician = delivery and delivery.level
    task = delivery.task_id if delivery else "-"
    wid, ui = escape(wid), escape(ui)
    return f"""
[bold]Lab alert[/bold]: {status.stage} ({status.urgency}); alert Task {escape(str(task))}
  workflow id     : {wid}
  Web UI          : {ui}
  escalation      : charge nurse at 15 min, department chief at 30 min unless acknowledged
  acknowledge     : careflow alerts ack {wid} --by <practitioner id>
                    or: temporal workflow signal -w {wid} --name acknowledge --input '{{"by": "dr-1"}}'
  open alerts     : careflow alerts list   (level reached: {physician or "-"})"""


def lab_alert(
    seed: Annotated[int, typer.Option(help="Synthetic EHR seed (as given to `careflow seed ehr`).")] = 7,
    patients: Annotated[int, typer.Option(help="Patients seeded with that seed.")] = 20,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the alert.")] = 60.0,
) -> None:
    """Send a critical lab result over MLLP and follow it to the physician's alert."""
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    asyncio.run(_lab_alert(settings, seed, patients, timeout))
