"""`careflow demo dr` (`make demo-dr`), declared by the disaster-recovery pipeline (workers/pipelines.py).

Assumes `careflow dev up --standby` and `careflow seed ehr --patients 20 --seed 7` ran.  It

1. checks that the standby streams from the primary;
2. starts a batch of prior auths (one workflow each, ids `prior-auth-<order>-dr<run>-<i>`);
3. kills the primary Postgres with SIGKILL while the batch runs;
4. starts DRFailoverWorkflow (automatic; forced when replication is asynchronous, as an operator would,
   since what the primary committed after the standby last heard from it cannot be known) and shows
   each stage as it fences the old primary, promotes the standby and moves every process to it;
5. waits for every prior auth of the batch to reach review on the new primary, prints the RTO/RPO per
   feature against the objectives, where to look, and how to fail back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from temporalio.service import RPCError

from careflow import task_queues
from careflow.config import Settings, load_settings
from careflow.db import replication
from careflow.dr import sites
from careflow.models.dr import FailoverInput
from careflow.models.prior_auth import PriorAuthInput
from careflow.models.prior_auth import workflow_id as pa_workflow_id
from careflow.security.logging import configure_logging
from starters.cli.common import CliError, cli_connect, make_console
from starters.cli.dr import describe
from starters.clients import dr as dr_client
from starters.clients.prior_auth import synthetic_orders, wait_drafts
from workflows.prior_auth import PriorAuthWorkflow

console = make_console()


async def _dr(settings: Settings, orders: int, seed: int, patients: int, kill_after: float) -> None:
    primary_url, standby_url = sites.urls(settings)
    try:
        streaming = [r for r in await replication.replicas(primary_url) if r.state == "streaming"]
    except OSError:
        streaming = []
    if not streaming:
        raise CliError("no standby streams from the primary: run `careflow dev up --standby` first")
    mode = "synchronous" if settings.standby_synchronous else "asynchronous"
    behind = f"{mode}, {streaming[0].lag_bytes} bytes behind"
    console.print(f"[bold]1. Sites[/bold]: primary {sites.redacted(primary_url)}, "
                  f"standby {sites.redacted(standby_url)} ({behind})")  # fmt: skip

    client = await cli_connect(settings)
    run = uuid.uuid4().hex[:6]
    held = [o.order_id for o in synthetic_orders(seed, patients)]
    wids = []
    for i in range(orders):
        order = held[i % len(held)]
        wid = pa_workflow_id(f"{order}-dr{run}-{i}")
        await client.start_workflow(PriorAuthWorkflow.run, PriorAuthInput(order_id=order), id=wid,
                                    task_queue=task_queues.MAIN)  # fmt: skip
        wids.append(wid)
    console.print(f"[bold]2. Batch[/bold]: {orders} prior auths started (prior-auth-<order>-dr{run}-<i>)")

    await asyncio.sleep(kill_after)
    primary = sites.cluster(settings, primary_url)
    pid = primary.pid()
    if pid is None:
        raise CliError(
            f"the primary {sites.redacted(primary_url)} is not an embedded cluster this demo can kill"
        )
    os.kill(pid, signal.SIGKILL)
    killed = datetime.now(UTC)
    console.print(
        f"[bold]3. Disaster[/bold]: kill -9 {pid} (the primary Postgres), {kill_after:.0f} s into the batch"
    )

    incident = f"demo-{run}"
    started = await dr_client.start(client, FailoverInput(
        incident=incident, requested_by="careflow-demo", reason="demo: the primary was killed",
        detected_at=killed, automatic=True, force=not settings.standby_synchronous,
    ))  # fmt: skip
    link = escape(settings.workflow_url(started.workflow_id))
    console.print(f"[bold]4. Failover[/bold]: {started.workflow_id}  {link}")
    seen = ""
    while True:
        st = await dr_client.status(client, started.workflow_id)
        if st.stage.value != seen:
            seen = st.stage.value
            console.print(f"   {seen}")
        if st.stage.settled:
            break
        await asyncio.sleep(0.2)
    done = await dr_client.result(client, started.workflow_id)
    if done.stage.value != "failed-over":
        raise CliError(f"the failover ended {done.stage.value}: {done.reason}")

    ready = await wait_drafts(client, wids, timeout=900)
    console.print(
        f"[bold]5. Batch finished on the new primary[/bold]: {len(ready)}/{orders} prior auths in review"
    )
    console.print(escape(describe(done)))
    console.print(f"\nWeb UI         : {link}")
    console.print(f"one prior auth : {escape(settings.workflow_url(wids[0]))}")
    console.print(f"fail back      : careflow dr failback --incident {incident} --by <you> --return-now")
    for wid in wids:  # demo orders: they would wait days in review
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(wid).terminate("careflow demo dr: done")


def dr(
    orders: Annotated[int, typer.Option(min=1, max=200, help="Prior auths in the batch.")] = 20,
    seed: Annotated[int, typer.Option(help="The seeded EHR's seed.")] = 7,
    patients: Annotated[int, typer.Option(min=1)] = 20,
    kill_after: Annotated[float, typer.Option(min=0, help="Seconds into the batch the primary dies.")] = 3.0,
) -> None:
    """Kill the primary Postgres under a prior-auth batch and watch the failover finish it."""
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    asyncio.run(_dr(settings, orders, seed, patients, kill_after))
