"""`careflow demo readmission` (`make demo-risk`), declared by the readmission pipeline
(workers/pipelines.py).

Trains a champion (and a shadow challenger) if the registry has none, with a progress bar; sends a
FHIR discharge event for every finished inpatient stay in the sandbox EHR (a day's discharges), waits
for each score, and prints the worklist with the high tier's narratives, the champion's subgroup
table, the nightly Schedule and where to look.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from careflow.config import Settings, load_settings
from careflow.models.readmission import (
    NIGHTLY_SCHEDULE_ID,
    DischargeSource,
    ModelAlias,
    ReadmissionStatus,
    SubgroupApproval,
    TrainingInput,
    TrainingStage,
)
from careflow.readmission import store
from careflow.readmission.fhir_features import stay_end
from careflow.readmission.registry import ModelRegistry, VersionInfo, open_registry
from careflow.security.logging import configure_logging
from starters.cli.common import CliError, IdTable, cli_connect, cli_fhir, cli_pool
from starters.cli.risk import console, follow_training, print_version, schedule_url
from starters.clients import readmission as client_of
from workflows.readmission import ReadmissionRiskWorkflow, ReadmissionTrainingWorkflow

DEMO_ACTOR = "careflow-demo"


async def ensure_model(
    settings: Settings, registry: ModelRegistry, alias: ModelAlias, discharges: int, seed: int
) -> VersionInfo:
    """The alias's version, trained now (progress bar) if there is none."""
    found = await asyncio.to_thread(registry.by_alias, alias)
    if found is not None:
        console.print(f"{alias.value}: model version {found.version} (trained {found.tag('trained_at')})")
        return found
    client = await cli_connect(settings)
    wid = await client_of.start_training(
        client, TrainingInput(discharges=discharges, seed=seed, promote_to=alias)
    )
    console.print(
        f"training the {alias.value} ({discharges:,} synthetic discharges, seed {seed}): {escape(wid)}"
    )
    status = await follow_training(client, wid)
    print_version(status, wid)
    handle = client.get_workflow_handle_for(ReadmissionTrainingWorkflow.run, wid)
    if status.stage is TrainingStage.AWAITING_APPROVAL:
        note = "approved by `careflow demo readmission`; a real reviewer reads the subgroup table first"
        await handle.execute_update(
            ReadmissionTrainingWorkflow.approve_subgroups, SubgroupApproval(reviewer=DEMO_ACTOR, note=note)
        )
        console.print(f"  the demo approved the flagged subgroups as {DEMO_ACTOR} (kept in the registry)")
    final = await handle.result()
    if final.alias is not alias or final.trained is None:
        raise CliError(f"{wid} ended {final.stage.value} without a {alias.value}")
    return await asyncio.to_thread(registry.version, final.trained.version)


async def finished_stays(settings: Settings, limit: int) -> list[str]:
    """The latest finished inpatient stays in the EHR (by discharge time), at most `limit`."""
    async with cli_fhir(settings, DEMO_ACTOR) as fhir:
        found = await fhir.search("Encounter", {"class": "IMP", "status": "finished"})
    stays = [(end, str(e["id"])) for e in found if (end := stay_end(e)) is not None]
    if not stays:
        raise CliError(
            "no finished inpatient stay in the EHR: run `careflow seed ehr --patients 20 --seed 7`"
        )
    return [e for _, e in sorted(stays, reverse=True)[:limit]]


async def discharge_all(settings: Settings, encounters: list[str]) -> list[ReadmissionStatus]:
    client = await cli_connect(settings)
    started = [await client_of.start_discharge(client, e, DischargeSource.FHIR) for e in encounters]
    fresh = sum(s.started for s in started)
    console.print(
        f"discharge events sent for {len(encounters)} stays ({fresh} started, {len(encounters) - fresh} "
        "already scored or running: attached)"
    )
    with Progress(
        TextColumn("scoring"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("scoring", total=len(started))

        async def one(wid: str) -> ReadmissionStatus:
            status = await client.get_workflow_handle_for(ReadmissionRiskWorkflow.run, wid).result()
            bar.advance(task)
            return status

        return list(await asyncio.gather(*(one(s.workflow_id) for s in started)))


def print_worklist(rows: list[store.ScoreRow], top: int) -> None:
    table = IdTable(
        "encounter", "score", "tier", "top factors (model contributions)", "Task", ids=("encounter",)
    )
    for r in rows[:top]:
        factors = "; ".join(f"{f['label']} ({f['contribution']:+.2f})" for f in r.factors)
        table.add_row(
            escape(r.encounter_id), f"{r.probability:.3f}", r.tier, escape(factors), r.task_id or "-"
        )
    console.print(table)
    for r in rows:
        if r.narrative:
            console.print(
                f"[bold]{escape(r.encounter_id)}[/] ({escape(r.narrative_engine)}): {escape(r.narrative)}"
            )


def print_subgroups(report: dict[str, Any]) -> None:
    overall = report["overall"]
    console.print(
        f"champion's evaluation (held out): AUROC {overall['auroc']:.3f} (LACE {report['lace_auroc']:.3f}, "
        f"best achievable {report['best_auroc']:.3f}), Brier {overall['brier']:.4f}"
    )
    table = IdTable("subgroup", "n", "readmitted", "AUROC", "Brier", "sensitivity", "flag")
    for r in report["subgroups"]:
        auc = f"{r['auroc']:.3f}" if r["auroc"] is not None else "-"
        sens = f"{r['sensitivity']:.2f}" if r["sensitivity"] is not None else "-"
        flag = "FLAGGED" if r["flagged"] else ("" if r["judged"] else "too small to judge")
        table.add_row(f"{r['attribute']}={r['value']}", str(r["n"]), str(r["events"]), auc,
                      f"{r['brier']:.4f}", sens, flag)  # fmt: skip
    console.print(table)


async def run_demo(settings: Settings, discharges: int, training_size: int, top: int) -> None:
    registry = open_registry(settings)
    champion = await ensure_model(settings, registry, ModelAlias.CHAMPION, training_size, 7)
    challenger = await ensure_model(settings, registry, ModelAlias.CHALLENGER, training_size, 8)
    await client_of.ensure_schedule(await cli_connect(settings))
    encounters = await finished_stays(settings, discharges)
    statuses = await discharge_all(settings, encounters)
    pool = await cli_pool(settings)
    try:
        rows = [r for e in encounters for r in await store.of_encounter(pool, e) if r.role == "champion"]
    finally:
        await pool.close()
    rows.sort(key=lambda r: r.probability, reverse=True)
    by_stage: dict[str, int] = {}
    for s in statuses:
        by_stage[s.stage.value] = by_stage.get(s.stage.value, 0) + 1
    tiers = {t: sum(r.tier == t for r in rows) for t in ("high", "moderate", "low")}
    console.print(
        f"\n[bold]Readmission risk[/]: {', '.join(f'{n} {k}' for k, n in by_stage.items())}; "
        f"tiers {tiers}; champion v{champion.version}, shadow challenger v{challenger.version}"
    )
    print_worklist(rows, top)
    print_subgroups(await asyncio.to_thread(registry.evaluation, champion.version))
    high = next((r for r in rows if r.tier == "high"), rows[0] if rows else None)
    console.print(
        f"""
  worklist        : careflow risk list            (every tier: careflow risk list --all)
  one discharge   : careflow risk show {escape(high.encounter_id) if high else "<encounter id>"}
  Web UI          : {escape(settings.workflow_url(high.workflow_id)) if high else ""}
  nightly Schedule: {escape(schedule_url(settings))}
                    run it now: temporal schedule trigger --schedule-id {NIGHTLY_SCHEDULE_ID}
  models          : careflow risk models          shadow vs champion: careflow risk compare
  FHIR            : {fhir_refs(settings, high)}"""
    )


def fhir_refs(settings: Settings, row: store.ScoreRow | None) -> str:
    if row is None or not row.risk_assessment_id:
        return "-"
    refs = f"{settings.fhir_base_url}/RiskAssessment/{row.risk_assessment_id}"
    return escape(refs + (f"  Task/{row.task_id}" if row.task_id else ""))


def readmission(
    discharges: Annotated[int, typer.Option(help="Discharge events to send (the latest stays).")] = 40,
    training_size: Annotated[int, typer.Option(help="Synthetic cohort for a model trained now.")] = 50_000,
    top: Annotated[int, typer.Option(help="Worklist rows to print.")] = 12,
) -> None:
    """Train (if needed), discharge a day of patients, print the worklist, subgroups and the Schedule.

    Declared as the readmission pipeline's demo (workers/pipelines.py): `careflow demo readmission`."""
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    asyncio.run(run_demo(settings, discharges, training_size, top))
