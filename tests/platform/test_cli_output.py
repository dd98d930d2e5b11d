"""What the `careflow` commands print: ids, URLs and commands whole (never `…`, never wrapped) with
no terminal at 80 columns, the way CI logs and `| tee` see them; and one line, no traceback, for a
missing id or a stack that is not running.

The tables and text blocks are the functions the commands print (rows in, renderable out), so most of
this needs no Temporal; the id lookups and the one-line errors run against the session's servers.
"""

from __future__ import annotations

import io
import socket
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import RenderableType
from temporalio.client import Client

from careflow.config import Settings
from careflow.fhir import codes
from careflow.models.lab_alert import DeliveryReceipt, LabAlertStatus
from careflow.models.prior_auth import CriterionRow, PayerOutcome, PriorAuthStatus, Stage, workflow_id
from starters.cli.common import CliError, make_console
from starters.cli.pa import list_table, resolve, status_table
from starters.clients.prior_auth import PaOrder
from starters.clients.visibility import Listed
from starters.demos.lab_alert import alert_summary
from starters.demos.prior_auth import drafts_table, how_to_review
from tests.support.cli import run_careflow

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(temporal_ui_url="http://127.0.0.1:8233", temporal_namespace="careflow")
ITEM = "Magnetic resonance imaging, lumbar spine, without contrast (CPT 72148) [met]"


def long_order(n: int) -> str:
    """Realistic long order ids: seed, patient, the item's key and a hash (40-60 characters)."""
    kind = sorted(codes.PRIOR_AUTH_SERVICES)[n % len(codes.PRIOR_AUTH_SERVICES)]
    return f"ord-7-{n}-{kind}-{uuid.uuid4().hex[:20]}"


def orders(count: int = 4) -> list[PaOrder]:
    return [PaOrder(long_order(n), ITEM) for n in range(count)]


def status(order_id: str, stage: Stage = Stage.AWAITING_REVIEW) -> PriorAuthStatus:
    payer = PayerOutcome(outcome="approved", claim_response_id="cr-1", preauth_ref=f"PA-{order_id[-20:]}")
    return PriorAuthStatus(
        stage=stage,
        order_id=order_id,
        criteria=[CriterionRow(criterion="conservative therapy >= 6 weeks", status="met")],
        missing_information=["most recent HbA1c"],
        payer_outcome=payer if stage == Stage.APPROVED else None,
    )


def printed(renderable: RenderableType, monkeypatch: pytest.MonkeyPatch, **terminal: int) -> str:
    """What a command prints: through make_console, into a stream that is not a terminal, with
    COLUMNS=80 (a CI runner's default); `width=N` makes it a terminal N columns wide instead."""
    monkeypatch.setenv("COLUMNS", "80")
    out = io.StringIO()
    if terminal:
        console = make_console(file=out, force_terminal=True, color_system=None, **terminal)
    else:
        console = make_console(file=out)
        assert not console.is_terminal
    console.print(renderable)
    return out.getvalue()


def whole(text: str, *values: str) -> None:
    assert "…" not in text
    for value in values:
        assert value in text, f"{value!r} is cut or wrapped in:\n{text}"


def test_the_demos_drafts_table_keeps_ids_and_links_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    os_ = orders()
    statuses = {workflow_id(o.order_id): status(o.order_id) for o in os_}
    out = printed(drafts_table(SETTINGS, os_, statuses), monkeypatch)
    wids = [workflow_id(o.order_id) for o in os_]
    assert all(len(w) >= 40 for w in wids)
    whole(out, *wids, *(SETTINGS.workflow_url(w) for w in wids), ITEM)  # "[met]" is text, not markup


def test_the_outcome_table_keeps_order_and_workflow_ids_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    os_ = orders()
    rows = [(workflow_id(o.order_id), o.item, status(o.order_id, Stage.APPROVED)) for o in os_]
    out = printed(status_table(rows), monkeypatch)
    whole(out, *(o.order_id for o in os_), *(w for w, _, _ in rows))
    whole(out, *(f"approved (PA-{o.order_id[-20:]})" for o in os_))


def test_pa_lists_table_keeps_ids_and_links_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    wids = [workflow_id(o.order_id) for o in orders()] + ["started-from-the-temporal-cli-" + "x" * 30]
    rows = [Listed(w, "awaiting_review", "expedited", "default", "sandbox-payer") for w in wids]
    out = printed(list_table(SETTINGS, rows), monkeypatch)
    whole(out, *wids, *(SETTINGS.workflow_url(w) for w in wids))
    assert max(map(len, out.splitlines())) > 80  # sized to its content, not to COLUMNS


def test_in_a_terminal_ids_stay_whole_and_the_rest_wraps_or_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    wids = [workflow_id(o.order_id) for o in orders()]
    table = list_table(SETTINGS, [Listed(w, "awaiting_review", "standard", "default") for w in wids])
    wide = printed(table, monkeypatch, width=140)
    whole(wide, *wids)  # the workflow ids keep their width; the links fold
    assert all(len(line) <= 140 for line in wide.splitlines())
    narrow = printed(table, monkeypatch, width=80)
    assert "…" not in narrow  # too narrow even for the ids: they fold, every character kept
    cells = "".join(line.split("│")[1].strip() for line in narrow.splitlines() if line.startswith("│"))
    whole(cells, *wids)


def test_the_lab_alert_demo_prints_its_link_and_commands_on_whole_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wid = f"lab-alert-{uuid.uuid4().hex}{uuid.uuid4().hex[:14]}"
    st = LabAlertStatus(
        stage="alerted",
        urgency="critical",
        alerted_at=datetime.now(UTC),
        deliveries=[DeliveryReceipt(level="physician", task_id=f"task-{uuid.uuid4().hex}", notified=True)],
    )
    lines = printed(alert_summary(SETTINGS, wid, st), monkeypatch).splitlines()
    url = f"{SETTINGS.temporal_ui_url}/namespaces/careflow/workflows/{wid}"
    for expected in (
        f"Web UI          : {url}",
        f"careflow alerts ack {wid} --by <practitioner id>",
        f'temporal workflow signal -w {wid} --name acknowledge --input \'{{"by": "dr-1"}}\'',
    ):
        assert any(expected in line for line in lines), f"{expected!r} not on one line of {lines}"


def test_the_demos_review_instructions_are_whole_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    wid = workflow_id(long_order(1))
    lines = printed(how_to_review(SETTINGS, wid, "Practitioner/pa-staff-1"), monkeypatch).splitlines()
    for expected in (
        f"careflow pa approve {wid} --reviewer Practitioner/pa-staff-1 [--comments ...]",
        f"Web UI      : {SETTINGS.workflow_url(wid)}",
        f"temporal workflow signal --workflow-id {wid} --name approve",
        f"careflow pa status {wid}",
    ):
        assert any(expected in line for line in lines), f"{expected!r} not on one line of {lines}"


# -- ids that name nothing, a stack that is not running: one line -------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def careflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_careflow(*args, columns=80, timeout=90, env=env)


def one_line(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("careflow: ")
    for text in expected:
        assert text in line, line


async def test_pa_commands_take_an_order_id_or_any_workflow_id(client: Client, task_queue: str) -> None:
    order = long_order(2)
    custom = f"pa-from-temporal-cli-{uuid.uuid4().hex[:8]}"
    other = f"not-prior-auth-{uuid.uuid4().hex[:8]}"
    handles = [
        await client.start_workflow("PriorAuthWorkflow", {"order_id": o}, id=w, task_queue=task_queue)
        for o, w in ((order, workflow_id(order)), ("ord-x", custom))
    ]
    handles.append(await client.start_workflow("LabResultAlertWorkflow", {}, id=other, task_queue=task_queue))
    try:
        assert await resolve(client, order) == workflow_id(order)
        assert await resolve(client, workflow_id(order)) == workflow_id(order)
        assert await resolve(client, custom) == custom  # no worker needed: nothing runs
        with pytest.raises(CliError, match=f"{other} is a LabResultAlertWorkflow, not a prior-auth"):
            await resolve(client, other)
        with pytest.raises(CliError, match="no prior-auth workflow prior-auth-ord-missing nor ord-missing"):
            await resolve(client, "ord-missing")
    finally:
        for h in handles:
            await h.terminate()


@pytest.mark.usefixtures("dev_server")
def test_a_missing_workflow_is_one_line_naming_it_and_what_to_run() -> None:
    missing = f"ord-{uuid.uuid4().hex[:8]}"
    one_line(careflow("pa", "status", missing), missing, "careflow pa list")
    one_line(careflow("pa", "status", f"prior-auth-{missing}"), f"prior-auth-{missing}", "careflow pa list")
    one_line(careflow("pa", "approve", missing, "--reviewer", "Practitioner/x"), missing, "careflow pa list")
    one_line(careflow("alerts", "ack", missing, "--by", "dr-1"), missing, "careflow alerts list")


def test_a_stack_that_is_not_running_is_one_line() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    one_line(careflow("pa", "status", "ord-1", env={"CAREFLOW_TEMPORAL_ADDRESS": nowhere}), nowhere, "dev up")
    db = {"CAREFLOW_DATABASE_URL": f"postgresql://postgres@{nowhere}/careflow"}
    one_line(careflow("teams", "list", env=db), "cannot reach Postgres", "dev up")


@pytest.mark.usefixtures("database_url")
def test_a_team_needs_no_budget_and_an_unknown_team_is_one_line() -> None:
    team = f"t-{uuid.uuid4().hex[:8]}"
    created = careflow("teams", "create", team)
    assert created.returncode == 0, created.stderr
    assert team in created.stdout and "100.00" in created.stdout
    one_line(careflow("teams", "create", team), f"'{team}' already exists", f"careflow teams set {team}")
    one_line(careflow("teams", "set", f"{team}-x", "--budget", "5"), f"{team}-x", "careflow teams list")
