"""`careflow risk ...`: readmission risk scoring (seed P11, P12).

train (with a progress bar) | approve | models | schedule | discharge | list | show | compare
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from careflow.config import Settings
from careflow.models.readmission import (
    NIGHTLY_SCHEDULE_ID,
    DischargeSource,
    ModelAlias,
    ReadmissionStage,
    SubgroupApproval,
    TrainingInput,
    TrainingStatus,
)
from careflow.models.readmission import (
    workflow_id as discharge_workflow_id,
)
from careflow.readmission import compare, store
from careflow.readmission.registry import open_registry
from starters.cli.common import (
    CliError,
    IdTable,
    cli_connect,
    cli_pool,
    cli_settings,
    last_heartbeat,
    make_console,
)
from starters.clients import readmission as client_of
from workflows.readmission import ReadmissionRiskWorkflow, ReadmissionTrainingWorkflow

risk_app = typer.Typer(
    name="risk", help="Readmission risk: models, the nightly Schedule, the worklist.", no_args_is_help=True
)
console = make_console()


def schedule_url(settings: Settings, schedule_id: str = NIGHTLY_SCHEDULE_ID) -> str:
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/schedules/{schedule_id}"


async def follow_training(client: Client, wid: str, show: Console | None = None) -> TrainingStatus:
    """Wait for the training's outcome, with a progress bar of its phases (cohort, rounds, evaluation)."""
    handle = client.get_workflow_handle_for(ReadmissionTrainingWorkflow.run, wid)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=show or console,
        transient=True,
    ) as bar:
        task = bar.add_task("training: starting", total=1)
        while True:
            status = await handle.query(ReadmissionTrainingWorkflow.status)
            if status.trained is not None:
                break
            details = await last_heartbeat(client, handle)
            if details:
                phase = details.get("phase", "")
                bar.update(
                    task,
                    description=f"training: {phase}",
                    completed=details.get("done", 0),
                    total=details.get("total", 1),
                )
            await asyncio.sleep(0.5)
    return status


def print_version(status: TrainingStatus, wid: str) -> None:
    t = status.trained
    if t is None:
        return
    console.print(
        f"model version {t.version}: AUROC {t.auroc:.3f} (LACE {t.lace_auroc:.3f}, best achievable "
        f"{t.best_auroc:.3f}), Brier {t.brier:.4f}, sensitivity at the high-risk cut "
        f"{(t.sensitivity or 0):.2f}; {t.rounds} rounds in {t.seconds:.1f} s; data {t.data_hash[:12]}"
    )
    for f in t.flagged:
        console.print(
            f"  flagged subgroup {f.attribute}={f.value}: AUROC {f.auroc:.3f} vs {f.overall_auroc:.3f} "
            f"overall (n={f.n})"
        )
    if status.stage.value == "awaiting-approval":
        console.print(
            f"  champion waits for a reviewer: careflow risk approve {wid} --reviewer <you> --note <why>"
        )


@risk_app.command("train")
def train(
    discharges: Annotated[int, typer.Option(help="Synthetic cohort size.")] = 50_000,
    seed: Annotated[int, typer.Option(help="Cohort and training seed (reproducible).")] = 7,
    as_: Annotated[
        ModelAlias | None,
        typer.Option(
            "--as",
            help="Alias for the new version (default: champion if there is none yet, else challenger).",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the training with a progress bar.")] = True,
) -> None:
    """Train, evaluate (overall and by subgroup) and register a model version (the training workflow)."""
    settings = cli_settings()

    async def run() -> None:
        client = await cli_connect(settings)
        inp = TrainingInput(discharges=discharges, seed=seed, promote_to=as_)
        wid = await client_of.start_training(client, inp)
        console.print(f"training {escape(wid)}: {escape(settings.workflow_url(wid))}")
        if wait:
            status = await follow_training(client, wid)
            print_version(status, wid)

    asyncio.run(run())


@risk_app.command("approve")
def approve(
    workflow_id: Annotated[str, typer.Argument(help="The training workflow (readmission-training-...).")],
    reviewer: Annotated[str, typer.Option(help="Who approves (kept in the registry).")],
    note: Annotated[str, typer.Option(help="Why the flagged subgroups are acceptable.")],
) -> None:
    """Approve a version whose flagged subgroups hold it from champion (the `approve_subgroups` update)."""
    settings = cli_settings()

    async def run() -> None:
        client = await cli_connect(settings)
        handle = client.get_workflow_handle_for(ReadmissionTrainingWorkflow.run, workflow_id)
        try:
            await handle.execute_update(
                ReadmissionTrainingWorkflow.approve_subgroups, SubgroupApproval(reviewer=reviewer, note=note)
            )
            result = await handle.result()
        except (WorkflowUpdateFailedError, RPCError) as exc:
            cause = getattr(exc, "cause", None)
            raise CliError(
                f"{workflow_id}: not approved ({getattr(cause, 'message', None) or exc})"
            ) from None
        alias = result.alias.value if result.alias else "-"
        console.print(f"{escape(workflow_id)}: {result.stage.value}, alias {alias}")

    asyncio.run(run())


@risk_app.command("models")
def models() -> None:
    """Model versions in the registry: aliases, metrics, flagged subgroups, approvals."""
    registry = open_registry(cli_settings())
    table = IdTable(
        "version",
        "aliases",
        "trained",
        "AUROC",
        "LACE",
        "Brier",
        "flagged subgroups",
        "approved by",
        "data hash",
        ids=("data hash",),
    )
    for v in registry.versions():
        table.add_row(
            v.version,
            ",".join(v.aliases) or "-",
            v.tag("trained_at"),
            v.tag("auroc"),
            v.tag("lace_auroc"),
            v.tag("brier"),
            ", ".join(v.flagged) or "none",
            v.approved_by or "-",
            v.tag("data_hash")[:16],
        )
    console.print(table if table.rows else "no model versions yet: `careflow risk train`")


@risk_app.command("schedule")
def schedule(
    cron: Annotated[str, typer.Option(help="When (UTC cron).")] = client_of.NIGHTLY_CRON,
) -> None:
    """Create (or update) the `readmission-nightly` Schedule: overlap skip, 12 h catch-up window."""
    settings = cli_settings()

    async def run() -> bool:
        return await client_of.ensure_schedule(await cli_connect(settings), cron=cron)

    created = asyncio.run(run())
    console.print(
        f"{NIGHTLY_SCHEDULE_ID}: {'created' if created else 'updated'} ({cron} UTC, overlap skip, "
        f"catch-up {client_of.CATCHUP_WINDOW})"
    )
    console.print(f"Web UI: {escape(schedule_url(settings))}")
    console.print(
        f"run it now: temporal schedule trigger --schedule-id {NIGHTLY_SCHEDULE_ID} --env-file ... "
        "(or the Web UI's Trigger)"
    )


@risk_app.command("discharge")
def discharge(
    encounter_id: Annotated[str, typer.Argument(help="The EHR's Encounter id of a finished inpatient stay.")],
    wait: Annotated[bool, typer.Option(help="Wait for the score.")] = True,
) -> None:
    """Score one discharge now (as the FHIR discharge event does)."""
    settings = cli_settings()

    async def run() -> None:
        client = await cli_connect(settings)
        try:
            started = await client_of.start_discharge(client, encounter_id, DischargeSource.FHIR)
        except ValueError as exc:
            raise CliError(str(exc).splitlines()[-1]) from None
        console.print(
            f"{escape(started.workflow_id)} ({'started' if started.started else 'attached'}): "
            f"{escape(settings.workflow_url(started.workflow_id))}"
        )
        if wait:
            handle = client.get_workflow_handle_for(ReadmissionRiskWorkflow.run, started.workflow_id)
            status = await handle.result()
            score = f"{status.probability:.2f} ({status.tier.value})" if status.tier else "-"
            console.print(
                f"{status.stage.value}: {score} model {status.model_version or '-'} {status.reason}"
            )

    asyncio.run(run())


@risk_app.command("list")
def list_worklist(
    all_tiers: Annotated[bool, typer.Option("--all", help="Every tier, not only high.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """The care-coordination worklist: high-risk discharges, highest first (score, factors, narrative)."""
    settings = cli_settings()

    async def run() -> list[store.ScoreRow]:
        pool = await cli_pool(settings)
        try:
            tiers = ("high", "moderate", "low") if all_tiers else ("high",)
            return await store.worklist(pool, limit, tiers)
        finally:
            await pool.close()

    rows = asyncio.run(run())
    table = IdTable(
        "encounter", "score", "tier", "top factors", "narrative", "model", "Task", ids=("encounter", "Task")
    )
    for r in rows:
        factors = "; ".join(f"{f['label']} ({f['contribution']:+.2f})" for f in r.factors)
        table.add_row(
            escape(r.encounter_id),
            f"{r.probability:.2f}",
            r.tier,
            escape(factors),
            escape(r.narrative or "-"),
            r.model_version,
            r.task_id or "-",
        )
    console.print(table if rows else "no scored discharges yet")


@risk_app.command("show")
def show(encounter_id: Annotated[str, typer.Argument(help="The discharge's Encounter id.")]) -> None:
    """One discharge: champion and shadow scores, factors, narrative, RiskAssessment, Task, workflow."""
    settings = cli_settings()

    async def run() -> tuple[list[store.ScoreRow], Any]:
        pool = await cli_pool(settings)
        try:
            rows = await store.of_encounter(pool, encounter_id)
        finally:
            await pool.close()
        client = await cli_connect(settings)
        wid = discharge_workflow_id(encounter_id)
        try:
            status = await client.get_workflow_handle_for(ReadmissionRiskWorkflow.run, wid).query(
                ReadmissionRiskWorkflow.status
            )
        except RPCError:
            status = None
        return rows, status

    rows, status = asyncio.run(run())
    wid = discharge_workflow_id(encounter_id)
    if not rows and status is None:
        raise CliError(
            f"no discharge {encounter_id} scored or running; `careflow risk list --all` lists them"
        )
    stage = status.stage.value if status else ReadmissionStage.SCORED.value
    console.print(f"{escape(wid)}: {stage} {escape(status.reason) if status else ''}")
    console.print(f"Web UI: {escape(settings.workflow_url(wid))}")
    for r in rows:
        console.print(
            f"[bold]{r.role}[/] model {r.model_version}: {r.probability:.3f} ({r.tier}), LACE {r.lace}, "
            f"discharged {r.discharged_at:%Y-%m-%d %H:%M}, source {r.source}"
        )
        for f in r.factors:
            console.print(f"  {escape(f['label'])}: {f['value']} ({f['contribution']:+.3f} log-odds)")
        if r.narrative:
            console.print(f"  narrative ({escape(r.narrative_engine)}): {escape(r.narrative)}")
        if r.risk_assessment_id:
            console.print(
                f"  RiskAssessment/{r.risk_assessment_id}" + (f", Task/{r.task_id}" if r.task_id else "")
            )


def _figure(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


@risk_app.command("compare")
def compare_models(
    latest: Annotated[int, typer.Option(help="Scores to compare (both roles), newest first.")] = 2000,
) -> None:
    """Champion vs shadow challenger on the latest discharges: agreement, and AUROC, Brier and calibration
    where the 30-day outcome is known (the nightly run records it a month after discharge)."""
    settings = cli_settings()

    async def run() -> list[store.ScoreRow]:
        pool = await cli_pool(settings)
        try:
            return await store.latest(pool, latest)
        finally:
            await pool.close()

    groups = compare.pairs(asyncio.run(run()))
    if not groups:
        raise CliError(
            "no discharge scored by both a champion and a challenger yet: "
            "`careflow risk train --as challenger`, then discharges (or `make demo-risk`)"
        )
    for versions, scored in groups.items():
        c = compare.compare(versions, scored)
        console.print(
            f"[bold]champion v{versions[0]} vs challenger v{versions[1]}[/]: {c.discharges} discharges "
            f"scored by both, {c.with_outcome} with a known 30-day outcome ({c.readmitted} readmitted)"
        )
        console.print(
            f"  agreement: same tier {c.tier_agreement:.0%}, both high where either is "
            f"{_figure(c.high_agreement, '.0%')}, rank correlation {_figure(c.rank_correlation)}, "
            f"mean |difference| {c.mean_abs_difference:.3f}"
        )
        table = IdTable(
            "", "version", "mean score", "high tier", "AUROC", "Brier", "calibration (predicted->seen)"
        )
        for role, side in (("champion", c.champion), ("challenger", c.challenger)):
            cal = "  ".join(f"{p:.2f}->{o:.2f}" for p, o, _ in side.calibration) or "-"
            table.add_row(role, side.version, f"{side.mean_probability:.3f}", f"{side.high_share:.0%}",
                          _figure(side.auroc), _figure(side.brier, ".4f"), cal)  # fmt: skip
        console.print(table)
        if c.champion.auroc is None:
            console.print(
                f"  AUROC needs {compare.MIN_FOR_AUROC}+ known outcomes with both classes; outcomes are "
                "settled by the nightly run 30 days after discharge"
            )
