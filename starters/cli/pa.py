"""`careflow pa ...`: prior authorization from the command line.

    careflow pa submit --order ord-7-3-semaglutide [--priority expedited]
    careflow pa batch --seed 7 --patients 20        every PA order of the synthetic EHR, until drafted
    careflow pa list [--all]                         workflows (visibility: CareflowPipeline="prior-auth")
    careflow pa status prior-auth-ord-7-3-semaglutide   (or the order id; or any workflow id)
    careflow pa approve|reject|request-changes <workflow or order id> --reviewer Practitioner/<id>
        [--comments TEXT] [--letter-file FILE]

Reviews go through the workflow's `review` update (starters/clients/pa_review.py), whose validator checks the
reviewer's PA role; a refused attempt is audited and printed.  The async functions below are what the
demo and the bench use too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError

from careflow import task_queues
from careflow.config import Settings
from careflow.models.prior_auth import (
    PIPELINE,
    WORKFLOW_ID_PREFIX,
    PriorAuthStatus,
    Priority,
    ReviewActionName,
    ReviewOutcome,
    ReviewRequest,
    workflow_id,
)
from starters.cli.common import (
    CliError,
    IdTable,
    cli_connect,
    cli_pool,
    cli_settings,
    find_workflow,
    make_console,
)
from starters.clients.keyed_start import Started
from starters.clients.prior_auth import (
    ORDER_ID_RE,
    PaOrder,
    start_prior_auth,
    status_of,
    submit_all,
    submit_review,
    synthetic_orders,
    wait_drafts,
)
from starters.clients.updates import ReviewRefused
from starters.clients.visibility import Listed, list_pipeline, type_name
from workflows.prior_auth import PriorAuthWorkflow

pa_app = typer.Typer(
    name="pa", help="Prior authorization: submit orders, follow drafts, review them.", no_args_is_help=True
)
console = make_console()


async def resolve(client: Client, given: str) -> str:
    """The prior-auth workflow `given` names: its workflow id (any id, e.g. one started from the
    `temporal` CLI) or its order id; none is a one-line CliError."""
    return await find_workflow(
        client,
        given,
        prefix=WORKFLOW_ID_PREFIX,
        workflow_type=type_name(PriorAuthWorkflow),
        what="prior-auth",
        listing="careflow pa list --all",
    )


async def review(
    settings: Settings,
    client: Client,
    wid: str,
    action: ReviewActionName,
    reviewer: str,
    comments: str = "",
    edited_letter: str | None = None,
) -> ReviewOutcome:
    pool = await cli_pool(settings)
    try:
        request = ReviewRequest(
            action=action, reviewer_id=reviewer, comments=comments, edited_letter=edited_letter
        )
        return await submit_review(client, wid, request, pool)
    finally:
        await pool.close()


def payer_cell(status: PriorAuthStatus) -> str:
    out = status.payer_outcome
    if out is None:
        return "-"
    return f"{out.outcome} ({out.preauth_ref})" if out.preauth_ref else out.outcome


def status_table(rows: Sequence[tuple[str, str, PriorAuthStatus]]) -> Table:
    """Rows of (workflow id, item, status) as the outcome table."""
    table = IdTable(
        "order", "item", "stage", "criteria met", "payer outcome", "workflow id",
        ids=("workflow id", "order", "payer outcome"),
    )  # fmt: skip
    for wid, item, st in rows:
        met = sum(1 for c in st.criteria if c.status == "met")
        table.add_row(
            escape(st.order_id), escape(item), st.stage.value, f"{met}/{len(st.criteria)}",
            escape(payer_cell(st)), escape(wid),
        )  # fmt: skip
    return table


def list_table(settings: Settings, rows: Sequence[Listed]) -> Table:
    """`careflow pa list`: workflow ids, stages (search attributes) and Web UI links."""
    table = IdTable("workflow id", "stage", "priority", "payer", "Web UI", ids=("workflow id", "Web UI"))
    for r in rows:
        table.add_row(
            escape(r.workflow_id),
            r.stage if r.status == "RUNNING" else f"{r.stage} ({r.status.lower()})",
            r.priority,
            escape(r.payer),
            escape(settings.workflow_url(r.workflow_id)),
        )
    return table


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


async def batch(
    settings: Settings,
    client: Client,
    orders: Sequence[PaOrder],
    *,
    priority: Priority = Priority.STANDARD,
    timeout: float = 600.0,
    task_queue: str = task_queues.MAIN,
) -> tuple[list[Started], dict[str, PriorAuthStatus]]:
    """Submit every order with a progress bar, then wait (second bar) until each draft is ready."""
    with progress() as bars:
        submitted = bars.add_task("orders submitted", total=len(orders))
        drafted = bars.add_task("drafts ready    ", total=len(orders))
        started = await submit_all(
            client,
            [o.order_id for o in orders],
            priority=priority,
            task_queue=task_queue,
            on_started=lambda _: bars.advance(submitted),
        )
        ready = await wait_drafts(
            client,
            [s.workflow_id for s in started],
            timeout=timeout,
            on_ready=lambda *_: bars.advance(drafted),
        )
    return started, ready


# -- commands -----------------------------------------------------------------------------------
def _priority(value: str) -> Priority:
    if value in ("standard", "expedited"):
        return Priority(value)
    raise typer.BadParameter("standard or expedited", param_hint="--priority")


@pa_app.command("submit")
def submit_cmd(
    order: Annotated[str, typer.Option(help="Order id (identifier system careflow/sid/order).")],
    priority: Annotated[str, typer.Option(help="standard | expedited (72 h payer deadline).")] = "standard",
) -> None:
    """Start prior authorization for one order (a duplicate attaches to the existing workflow)."""
    settings = cli_settings()
    level = _priority(priority)
    if not ORDER_ID_RE.match(order):
        raise typer.BadParameter(
            "1-100 characters [A-Za-z0-9._-], e.g. ord-7-3-semaglutide", param_hint="--order"
        )

    async def go() -> Started:
        return await start_prior_auth(await cli_connect(settings), order, priority=level)

    started = asyncio.run(go())
    verb = "started" if started.started else "already exists (attached)"
    console.print(
        f"{escape(started.workflow_id)}: {verb}\n"
        f"  Web UI: {escape(settings.workflow_url(started.workflow_id))}"
    )


@pa_app.command("batch")
def batch_cmd(
    seed: Annotated[int, typer.Option(help="Synthetic EHR seed (as given to `careflow seed ehr`).")] = 7,
    patients: Annotated[int, typer.Option(help="Patients seeded with that seed.")] = 20,
    priority: Annotated[str, typer.Option(help="standard | expedited")] = "standard",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every draft.")] = 600.0,
) -> None:
    """Submit every prior-auth order of the synthetic EHR and wait until each draft is ready."""
    settings = cli_settings()
    level = _priority(priority)
    orders = synthetic_orders(seed, patients)

    async def go() -> tuple[list[Started], dict[str, PriorAuthStatus]]:
        return await batch(settings, await cli_connect(settings), orders, priority=level, timeout=timeout)

    try:
        started, ready = asyncio.run(go())
    except TimeoutError as exc:
        raise CliError(str(exc)) from None
    items = {workflow_id(o.order_id): o.item for o in orders}
    console.print(
        status_table([(s.workflow_id, items[s.workflow_id], ready[s.workflow_id]) for s in started])
    )
    new = sum(s.started for s in started)
    console.print(f"{len(started)} orders: {new} started, {len(started) - new} already existed")


@pa_app.command("list")
def list_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Include closed workflows.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
) -> None:
    """Prior-auth workflows with their stage (from search attributes: no PHI) and Web UI links."""
    settings = cli_settings()

    async def go() -> list[Listed]:
        return await list_pipeline(await cli_connect(settings), PIPELINE, include_closed=all_, limit=limit)

    rows = asyncio.run(go())
    if not rows:
        more = "" if all_ else " open or failed (`careflow pa list --all` includes completed ones)"
        console.print(f"no prior-auth workflows{more}; start one: careflow pa submit --order ORDER_ID")
        return
    console.print(list_table(settings, rows))


@pa_app.command("status")
def status_cmd(workflow: Annotated[str, typer.Argument(help="Workflow id or order id.")]) -> None:
    """The workflow's `status` query: stage, timestamps, criteria, missing information, draft ids."""
    settings = cli_settings()

    async def go() -> tuple[str, PriorAuthStatus]:
        client = await cli_connect(settings)
        wid = await resolve(client, workflow)
        try:
            return wid, await status_of(client, wid)
        except RPCError as exc:
            raise CliError(
                f"{wid} did not answer its status query ({exc.message}); are workers running? "
                "`careflow dev status`"
            ) from None

    wid, st = asyncio.run(go())
    console.print(
        f"[bold]{escape(wid)}[/bold]: {st.stage.value} (priority {st.priority.value}, revision {st.revision})"
    )
    for label, value in (
        ("received", st.received_at),
        ("draft ready", st.draft_ready_at),
        ("decided", st.decided_at),
        ("payer deadline", st.deadline),
        ("draft", st.document_reference_id and f"DocumentReference/{st.document_reference_id}"),
        ("review task", st.task_id and f"Task/{st.task_id}"),
        ("payer", st.payer),
        ("payer outcome", payer_cell(st)),
        ("decision", st.decision and f"{st.decision.action} by {st.decision.reviewer_ref}"),
    ):
        console.print(f"  {label:15s}: {escape(str(value or '-'))}")
    # Square brackets in the text are not Rich markup: "[met]" must print, not style.
    colours = {"met": "green", "not_met": "red", "unknown": "yellow"}
    for c in st.criteria:
        console.print(f"  criterion [{colours.get(c.status, 'white')}]{c.status:8s}[/] {escape(c.criterion)}")
    for m in st.missing_information:
        console.print(f"  missing: {escape(m)}")
    console.print(f"  Web UI         : {escape(settings.workflow_url(wid))}")


def _review_cmd(
    action: ReviewActionName, workflow: str, reviewer: str, comments: str, letter: Path | None
) -> None:
    settings = cli_settings()
    edited = letter.read_text() if letter else None

    async def go() -> tuple[str, ReviewOutcome]:
        client = await cli_connect(settings)
        wid = await resolve(client, workflow)
        return wid, await review(settings, client, wid, action, reviewer, comments, edited)

    try:
        wid, outcome = asyncio.run(go())
    except ReviewRefused as exc:
        console.print(f"[red]refused[/red]: {escape(exc.reason)} (the attempt is in the audit trail)")
        raise typer.Exit(1) from None
    console.print(f"{escape(wid)}: {outcome.action} accepted; stage {outcome.stage}")


Reviewer = Annotated[str, typer.Option(help="Practitioner/<id> holding the pa-staff or pa-supervisor role.")]
Comments = Annotated[str, typer.Option(help="Comments (required for request-changes).")]
LetterFile = Annotated[
    Path | None,
    typer.Option(help="The letter as edited by the reviewer.", exists=True, dir_okay=False, readable=True),
]
Workflow = Annotated[str, typer.Argument(help="Workflow id or order id.")]


@pa_app.command("approve")
def approve_cmd(
    workflow: Workflow, reviewer: Reviewer, comments: Comments = "", letter_file: LetterFile = None
) -> None:
    """Approve the draft (with your edits, if any): it becomes final and goes to the payer."""
    _review_cmd("approve", workflow, reviewer, comments, letter_file)


@pa_app.command("reject")
def reject_cmd(
    workflow: Workflow, reviewer: Reviewer, comments: Comments = "", letter_file: LetterFile = None
) -> None:
    """Reject the draft: the Task is cancelled and nothing is submitted."""
    _review_cmd("reject", workflow, reviewer, comments, letter_file)


@pa_app.command("request-changes")
def request_changes_cmd(
    workflow: Workflow, reviewer: Reviewer, comments: Comments = "", letter_file: LetterFile = None
) -> None:
    """Ask for a new draft that addresses your comments; it comes back for review."""
    _review_cmd("request_changes", workflow, reviewer, comments, letter_file)
