"""`careflow demo prior-auth`: the main job of `make run`.

Assumes `careflow dev up` and `careflow seed ehr --patients 20 --seed 7` ran.  It

1. ingests the starter knowledge base (guidelines and payer PA criteria; `careflow kb ingest
   careflow/kb/starter --tenant default`): documents already stored are left unchanged;
2. submits the morning batch: every prior-auth order of the synthetic EHR, one workflow per order
   (`prior-auth-<order id>`), with a progress bar, and waits until each draft is ready;
3. lists the drafts with their workflow ids and Temporal Web UI links, and shows how a reviewer acts:
   the CLI, the Web UI (signal `approve` with JSON) or `temporal workflow signal`;
4. approves one draft, rejects one, requests changes on one (and waits until its new draft is back in
   review), leaves the rest waiting, and prints the outcome table.

Running it again attaches to the same workflows (never restarts one) and repeats no review action:
the three orders it acts on are chosen deterministically, and an action already taken is skipped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from temporalio.client import Client

from careflow import task_queues
from careflow.config import Settings, load_settings
from careflow.fhir import codes
from careflow.models.prior_auth import PriorAuthStatus, ReviewActionName, workflow_id
from careflow.security.logging import configure_logging
from starters.cli.common import CliError, IdTable, cli_connect, cli_fhir
from starters.cli.pa import batch, console, payer_cell, review, status_table
from starters.clients.prior_auth import PaOrder, status_of, synthetic_orders, wait_stage

STARTER_KB = Path(__file__).resolve().parents[2] / "careflow" / "kb" / "starter"
DEMO_ACTOR = "careflow-demo"


@dataclass
class DemoResult:
    orders: list[PaOrder]
    statuses: dict[str, PriorAuthStatus] = field(default_factory=dict)  # workflow id -> final status
    acted: dict[str, str] = field(default_factory=dict)  # workflow id -> action taken (or skipped)
    started: int = 0


async def seed_knowledge_base(
    client: Client, tenant_id: str = "default", task_queue: str = task_queues.MAIN, folder: Path = STARTER_KB
) -> None:
    """`careflow kb ingest careflow/kb/starter --tenant default`, followed to its summary."""
    from starters.cli.kb import follow, print_summary
    from starters.clients.kb import start_ingest

    console.print("[bold]1. Knowledge base[/bold]: starter guidelines and payer criteria")
    # An absolute path: the workers read the folder.
    handle = await start_ingest(client, tenant_id, str(folder), task_queue=task_queue)
    print_summary(await follow(handle))


async def pa_reviewers(settings: Settings) -> list[str]:
    """Practitioner references of the PA staff (role pa-staff) in the EHR, for the demo's reviews."""
    async with cli_fhir(settings, DEMO_ACTOR) as fhir:
        roles = await fhir.search("PractitionerRole", {"code": f"{codes.ROLE_SYSTEM}|pa-staff"})
    active = (r for r in roles if r.get("active", True))
    refs = sorted({(r.get("practitioner") or {}).get("reference", "") for r in active} - {""})
    if not refs:
        raise CliError("no PA staff in the EHR: run `careflow seed ehr --patients 20 --seed 7` first")
    return refs


def choose(orders: Sequence[PaOrder], statuses: dict[str, PriorAuthStatus]) -> dict[ReviewActionName, str]:
    """Which draft to approve, reject and send back.  Actions taken on an earlier run keep their
    workflow (so a rerun repeats nothing); the rest are picked among drafts still untouched.  The
    approval goes to the best-supported draft of an item the sandbox payer can decide at once (not
    total knee arthroplasty, which it pends)."""
    wids = [workflow_id(o.order_id) for o in orders]
    picks: dict[ReviewActionName, str] = {}
    for wid in wids:
        st = statuses[wid]
        if st.decision is not None:
            picks.setdefault(st.decision.action, wid)
        elif st.revision > 0:
            picks.setdefault("request_changes", wid)
    untouched = [
        w
        for w in wids
        if w not in picks.values()
        and statuses[w].stage.value == "awaiting_review"
        and statuses[w].revision == 0
        and statuses[w].decision is None
    ]

    def support(wid: str) -> tuple[int, int, bool]:
        crit = statuses[wid].criteria
        not_met = sum(c.status == "not_met" for c in crit)
        unknown = sum(c.status == "unknown" for c in crit)
        return not_met, unknown, wid.endswith("total_knee_arthroplasty")

    if "approve" not in picks and untouched:
        best = min(untouched, key=lambda w: (*support(w), untouched.index(w)))
        picks["approve"] = best
        untouched.remove(best)
    for action in ("reject", "request_changes"):
        if action not in picks and untouched:
            picks[action] = untouched.pop(0)
    return picks


def drafts_table(
    settings: Settings, orders: Sequence[PaOrder], statuses: dict[str, PriorAuthStatus]
) -> Table:
    table = IdTable(
        "workflow id", "item", "stage", "criteria met", "missing", "Web UI", ids=("workflow id", "Web UI")
    )  # fmt: skip
    for o in orders:
        wid = workflow_id(o.order_id)
        st = statuses[wid]
        met = sum(1 for c in st.criteria if c.status == "met")
        table.add_row(
            escape(wid), escape(o.item), st.stage.value, f"{met}/{len(st.criteria)}",
            str(len(st.missing_information)), escape(settings.workflow_url(wid)),
        )  # fmt: skip
    return table


def print_drafts(settings: Settings, orders: Sequence[PaOrder], statuses: dict[str, PriorAuthStatus]) -> None:
    console.print("\n[bold]3. Drafts ready for review[/bold]")
    console.print(drafts_table(settings, orders, statuses))


def how_to_review(settings: Settings, wid: str, reviewer: str) -> str:
    """Markup: ids, commands and the link each whole on its line (the console never wraps them)."""
    body = json.dumps({"reviewer_id": reviewer, "comments": "Criteria met; approved."})
    wid, reviewer, body = escape(wid), escape(reviewer), escape(body)
    return f"""
[bold]How a reviewer acts[/bold] (a reviewer must hold the pa-staff or pa-supervisor role)
  CLI         : careflow pa approve {wid} --reviewer {reviewer} [--comments ...] [--letter-file edited.txt]
                careflow pa reject {wid} --reviewer {reviewer}
                careflow pa request-changes {wid} --reviewer {reviewer} --comments "Cite the HbA1c"
  Web UI      : {escape(settings.workflow_url(wid))}
                -> Signal, name approve (or reject, request_changes), input {body}
  temporal CLI: temporal workflow signal --workflow-id {wid} --name approve \\
                  --input '{body}'
  status      : careflow pa status {wid}    (the `status` query)"""


def print_how_to_review(settings: Settings, wid: str, reviewer: str) -> None:
    console.print(how_to_review(settings, wid, reviewer))


async def act(
    settings: Settings, client: Client, action: ReviewActionName, wid: str, reviewer: str, timeout: float
) -> str:
    """Take the action unless it was taken on an earlier run; wait for its effect."""
    st = await status_of(client, wid)
    if action == "request_changes" and st.revision > 0:
        return "request_changes (done on an earlier run)"
    if st.decision is not None or st.stage.value != "awaiting_review":
        return f"{action} skipped: already {st.stage.value}"
    comments = {
        "approve": "Criteria met; approved as drafted.",
        "reject": "Not medically necessary at this time; order to be reconsidered.",
        "request_changes": "Please cite the most recent HbA1c and the duration of prior therapy.",
    }[action]
    outcome = await review(settings, client, wid, action, reviewer, comments)
    if action == "approve":
        await wait_stage(client, wid, lambda s: s.stage.payer_answered, timeout)
    elif action == "reject":
        await wait_stage(client, wid, lambda s: s.stage.value == "rejected", timeout)
    else:
        await wait_stage(
            client, wid, lambda s: s.revision > st.revision and s.stage.value == "awaiting_review", timeout
        )
    return f"{outcome.action} by {reviewer}"


async def run_demo(
    settings: Settings,
    client: Client,
    *,
    seed: int = 7,
    patients: int = 20,
    timeout: float = 600.0,
    task_queue: str = task_queues.MAIN,
    seed_kb: bool = True,
    kb_folder: Path = STARTER_KB,
) -> DemoResult:
    if seed_kb:
        await seed_knowledge_base(client, task_queue=task_queue, folder=kb_folder)
    orders = synthetic_orders(seed, patients)
    result = DemoResult(orders)
    if not orders:
        console.print("the synthetic EHR has no prior-auth orders for this seed and size")
        return result

    console.print(
        f"\n[bold]2. Morning batch[/bold]: {len(orders)} prior-auth orders (seed {seed}, {patients} patients)"
    )
    started, ready = await batch(settings, client, orders, timeout=timeout, task_queue=task_queue)
    result.started = sum(s.started for s in started)
    print_drafts(settings, orders, ready)

    reviewer = (await pa_reviewers(settings))[0]
    picks = choose(orders, ready)
    example = picks.get("approve") or next(iter(ready))
    print_how_to_review(settings, example, reviewer)

    console.print("\n[bold]4. Reviews[/bold]")
    for action, wid in picks.items():
        result.acted[wid] = await act(settings, client, action, wid, reviewer, timeout)
        console.print(f"  {escape(wid)}: {escape(result.acted[wid])}")
    waiting = len(orders) - len(picks)
    console.print(f"  {waiting} draft(s) left waiting for review")

    for o in orders:
        wid = workflow_id(o.order_id)
        result.statuses[wid] = await status_of(client, wid)
    items = {workflow_id(o.order_id): o.item for o in orders}
    console.print("\n[bold]Outcome[/bold]")
    console.print(status_table([(wid, items[wid], st) for wid, st in result.statuses.items()]))
    approved = [wid for wid, st in result.statuses.items() if st.payer_outcome is not None]
    for wid in approved:
        console.print(f"  payer: {escape(wid)} -> {escape(payer_cell(result.statuses[wid]))}")
    console.print(
        f"\n  {result.started} workflow(s) started now, {len(orders) - result.started} attached to"
        " existing ones."
        f"\n  Open workflows: careflow pa list    Web UI: "
        f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows"
    )
    return result


def prior_auth(
    seed: Annotated[int, typer.Option(help="Synthetic EHR seed (as given to `careflow seed ehr`).")] = 7,
    patients: Annotated[int, typer.Option(help="Patients seeded with that seed.")] = 20,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for drafts and review effects.")] = 600.0,
    kb: Annotated[bool, typer.Option(help="Ingest the starter knowledge base first.")] = True,
) -> None:
    """Morning batch of prior-auth orders -> drafts -> one approved, one rejected, one revised.

    Declared as the prior-auth pipeline's demo (workers/pipelines.py): `careflow demo prior-auth`."""
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)

    async def go() -> None:
        await run_demo(
            settings, await cli_connect(settings), seed=seed, patients=patients, timeout=timeout, seed_kb=kb
        )

    try:
        asyncio.run(go())
    except TimeoutError as exc:
        raise CliError(str(exc)) from None
