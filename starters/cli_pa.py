"""`careflow pa ...`: prior authorization from the command line.

    careflow pa submit --order ord-7-3-semaglutide [--priority expedited]
    careflow pa batch --seed 7 --patients 20        every PA order of the synthetic EHR, until drafted
    careflow pa list [--all]                         workflows (visibility: CareflowPipeline="prior-auth")
    careflow pa status prior-auth-ord-7-3-semaglutide   (or the order id; or any workflow id)
    careflow pa approve|reject|request-changes <workflow or order id> --reviewer Practitioner/<id>
        [--comments TEXT] [--letter-file FILE]

Reviews go through the workflow's `review` update (starters/pa_review.py), whose validator checks the
reviewer's PA role; a refused attempt is audited and printed.  The async functions below are what the
demo and the bench use too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from careflow import task_queues
from careflow.config import Settings
from careflow.fhir import codes
from careflow.fhir.synthetic import generate_ehr
from careflow.models.prior_auth import PriorAuthStatus, ReviewActionName, ReviewOutcome, ReviewRequest, Stage
from starters.cli_common import (
    OPEN_OR_FAILED,
    CliError,
    IdTable,
    cli_connect,
    cli_pool,
    cli_settings,
    find_workflow,
    make_console,
)
from starters.pa_orders import (
    ORDER_ID_RE,
    PIPELINE,
    WORKFLOW_TYPE,
    Priority,
    Started,
    start_prior_auth,
    workflow_id,
)
from starters.pa_review import ReviewRefused, submit_review
from workflows.prior_auth import PriorAuthWorkflow

pa_app = typer.Typer(
    help="Prior authorization: submit orders, follow drafts, review them.", no_args_is_help=True
)
console = make_console()

# Stages in which the workflow is still working on a draft; any other stage means a draft is ready
# (or the workflow has ended without one, e.g. order_not_found).
DRAFTING_STAGES = frozenset({"received", "extracting", "retrieving", "drafting", "regenerating"})
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]+")  # safe to quote in a visibility query


@dataclass(frozen=True)
class PaOrder:
    order_id: str
    item: str  # human label of the requested drug or service


def item_label(order_id: str) -> str:
    key = order_id.rsplit("-", 1)[-1] if "-" in order_id else order_id
    for kind in (*codes.PRIOR_AUTH_SERVICES, *codes.PRIOR_AUTH_MEDICATIONS):
        if order_id.endswith(f"-{kind}"):
            key = kind
    if key in codes.PRIOR_AUTH_SERVICES:
        primary = codes.PRIOR_AUTH_SERVICES[key][0]
        return f"{primary.display} (CPT {primary.code})"
    if key in codes.MEDICATIONS:
        return codes.MEDICATIONS[key].display
    return key


def synthetic_orders(seed: int, patients: int) -> list[PaOrder]:
    """Every prior-auth order that `careflow seed ehr --seed S --patients N` loads (ids are date-free)."""
    ehr = generate_ehr(seed, patients, datetime.now(UTC).date())
    return [
        PaOrder(f"ord-{seed}-{p.index}-{kind}", item_label(kind))
        for p in ehr.profiles
        for kind in p.prior_auth_orders
    ]


async def resolve(client: Client, given: str) -> str:
    """The prior-auth workflow `given` names: its workflow id (any id, e.g. one started from the
    `temporal` CLI) or its order id; none is a one-line CliError."""
    return await find_workflow(
        client,
        given,
        prefix=workflow_id(""),
        workflow_type=WORKFLOW_TYPE,
        what="prior-auth",
        listing="careflow pa list --all",
    )


def ui_link(settings: Settings, wid: str) -> str:
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{wid}"


async def status_of(client: Client, wid: str) -> PriorAuthStatus:
    return await client.get_workflow_handle(wid).query(PriorAuthWorkflow.status)


async def poll_status(client: Client, wid: str) -> PriorAuthStatus | None:
    """The status, or None while the workflow cannot answer yet (no worker has run its first task, or
    a workflow task is failing and being retried: the worker log says why)."""
    try:
        return await status_of(client, wid)
    except RPCError as exc:
        if exc.status == RPCStatusCode.FAILED_PRECONDITION:
            return None
        raise


async def submit_all(
    client: Client,
    order_ids: Sequence[str],
    *,
    priority: Priority = "standard",
    task_queue: str = task_queues.MAIN,
    concurrency: int = 32,
    on_started: Callable[[Started], None] | None = None,
) -> list[Started]:
    slots = asyncio.Semaphore(concurrency)

    async def one(order_id: str) -> Started:
        async with slots:
            started = await start_prior_auth(client, order_id, priority=priority, task_queue=task_queue)
        if on_started:
            on_started(started)
        return started

    return list(await asyncio.gather(*(one(o) for o in order_ids)))


async def past_drafting(client: Client, wids: Sequence[str]) -> set[str]:
    """Which of these workflows are past drafting, by their CareflowStage search attribute: one
    visibility query per 100 workflows, where querying each workflow would cost a worker task."""
    done = ", ".join(f"'{s.value}'" for s in Stage if s.value not in DRAFTING_STAGES)
    found: set[str] = set()
    for start in range(0, len(wids), 100):
        ids = ", ".join(f"'{w}'" for w in wids[start : start + 100])
        async for wf in client.list_workflows(f"WorkflowId IN ({ids}) AND CareflowStage IN ({done})"):
            found.add(wf.id)
    return found


async def wait_drafts(
    client: Client,
    wids: Iterable[str],
    *,
    timeout: float = 600.0,
    on_ready: Callable[[str, PriorAuthStatus], None] | None = None,
) -> dict[str, PriorAuthStatus]:
    """Wait until every workflow is past drafting (visibility), then read its `status` once."""
    waiting = list(dict.fromkeys(wids))
    if bad := [w for w in waiting if not _PLAIN_ID.fullmatch(w)]:
        raise ValueError(f"workflow ids a visibility query cannot name: {', '.join(bad[:3])}")
    ready: dict[str, PriorAuthStatus] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while waiting:
        for wid in sorted(await past_drafting(client, waiting)):
            status = await poll_status(client, wid)
            if status is not None:
                ready[wid] = status
                if on_ready:
                    on_ready(wid, status)
        waiting = [w for w in waiting if w not in ready]
        if waiting and loop.time() > deadline:
            raise TimeoutError(
                f"{len(waiting)} prior-auth drafts not ready within {timeout:.0f}s "
                "(are workers running? `careflow dev status`; worker logs in .careflow/logs/)"
            )
        if waiting:
            await asyncio.sleep(0.5)
    return ready


async def wait_stage(
    client: Client, wid: str, done: Callable[[PriorAuthStatus], bool], timeout: float = 120.0
) -> PriorAuthStatus:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await poll_status(client, wid)
        if status is not None and done(status):
            return status
        if loop.time() > deadline:
            stage = status.stage.value if status else "not answering queries"
            raise TimeoutError(
                f"{wid} still {stage} after {timeout:.0f}s (are workers running? `careflow dev status`)"
            )
        await asyncio.sleep(0.25)


@dataclass(frozen=True)
class Listed:
    workflow_id: str
    stage: str
    priority: str
    payer: str
    status: str = "RUNNING"  # Temporal's execution status: RUNNING, COMPLETED, FAILED, TERMINATED, ...


async def list_prior_auths(client: Client, *, include_closed: bool = False, limit: int = 100) -> list[Listed]:
    """Open prior auths and those that failed (a failed run is work lost until its order is resent);
    `include_closed` adds the completed ones."""
    query = f"CareflowPipeline = '{PIPELINE}'"
    if not include_closed:
        query += f" AND {OPEN_OR_FAILED}"
    rows = []
    async for wf in client.list_workflows(query, limit=limit):
        attrs = wf.search_attributes
        stage = (attrs.get("CareflowStage") or ["-"])[0]
        priority = (attrs.get("CareflowPriority") or ["-"])[0]
        payer = (attrs.get("CareflowPayer") or ["-"])[0]
        status = wf.status.name if wf.status is not None else "RUNNING"
        rows.append(Listed(wf.id, str(stage), str(priority), str(payer), status))
    return sorted(rows, key=lambda r: r.workflow_id)


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
            escape(ui_link(settings, r.workflow_id)),
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
    priority: Priority = "standard",
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
        return cast(Priority, value)
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
        f"{escape(started.workflow_id)}: {verb}\n  Web UI: {escape(ui_link(settings, started.workflow_id))}"
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
        return await list_prior_auths(await cli_connect(settings), include_closed=all_, limit=limit)

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
    console.print(f"  Web UI         : {escape(ui_link(settings, wid))}")


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
