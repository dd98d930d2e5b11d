"""Readmission risk against the seed's targets (P11, P12).  Figures are printed with their ratio to the
goal, never asserted.

Model (no servers): generates `--discharges` synthetic discharges (default 50,000) from the documented
generative risk model and runs one training run exactly as `ReadmissionTrainingWorkflow` does
(careflow/readmission/training.py); prints, on the held-out 20 %: the model's AUROC beside LACE's and
the generator's own (the best any model can reach), Brier, calibration by decile, sensitivity at the
high-risk cut, the subgroup table, and the training time.

Pipeline (`--pipeline`; needs the stack, seeded patients and a champion: `make demo-risk`): creates
finished inpatient Encounters for the seeded patients in the sandbox EHR and measures, through the real
workers, discharge event -> RiskAssessment written:
- one discharge at a time at `--rate` per second (the seed's 300/day is one every 288 s: no queueing,
  so this is each discharge's own latency), p50 / p95 against the 2-hour SLA;
- a nightly backfill of `--backfill` (default 3,000) discharges of the last 24 h through
  `ReadmissionNightlyWorkflow`: time for the whole batch against the same 2 hours.

    .venv/bin/python -m bench.risk_bench [--discharges 50000] [--seed 7]
    .venv/bin/python -m bench.risk_bench --pipeline [--steady 60] [--rate 1] [--backfill 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from careflow.readmission import evaluation, training

GOAL_AUROC = 0.80
GOAL_GAP_TO_BEST = 0.02
SLA_S = 2 * 3600.0


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def model_bench(n: int, seed: int) -> None:
    t0 = time.perf_counter()
    run = training.run(n, seed)
    total = time.perf_counter() - t0
    report, got, best = run.report, run.auroc, run.best_auroc
    print(f"cohort: {n:,} discharges (seed {seed}), {run.readmitted_share:.1%} readmitted")
    fit = int(n * (1 - training.TEST_SHARE))
    print(f"training: {fit:,} discharges, {run.rounds} rounds, {run.seconds:.1f} s "
          f"(cohort + training + evaluation {total:.1f} s)")  # fmt: skip
    print(f"held out: {report.overall.n:,} discharges")
    print(f"  AUROC model {got:.3f} (goal >= {GOAL_AUROC}: {got / GOAL_AUROC:.2f}x)")
    print(f"  AUROC LACE  {run.lace_auroc:.3f}")
    print(f"  AUROC best achievable (the generator's own risk) {best:.3f}; model gap {best - got:.3f} "
          f"(goal <= {GOAL_GAP_TO_BEST}: {verdict(best - got <= GOAL_GAP_TO_BEST)})")  # fmt: skip
    sens = report.overall.sensitivity or 0.0
    print(f"  Brier {report.overall.brier:.4f}; high-risk cut {run.cuts.high:.3f} (top "
          f"{training.HIGH_SHARE:.0%}), sensitivity there {sens:.2f}")  # fmt: skip
    print("  calibration (mean predicted -> observed, per decile):")
    print("   " + "  ".join(f"{pred:.2f}->{seen:.2f}" for pred, seen, _ in report.calibration))
    print(f"subgroups (flag: AUROC <= overall - {evaluation.SUBGROUP_GAP}):")
    for r in report.subgroups:
        m = r.metrics
        auc = f"{m.auroc:.3f}" if m.auroc is not None else "  -  "
        mark = "FLAGGED" if r.flagged else ("" if r.judged else "(too small to judge)")
        print(f"  {r.attribute:<15} {r.value:<11} n={m.n:<6} events={m.events:<5} AUROC {auc} "
              f"Brier {m.brier:.4f} {mark}")  # fmt: skip


# -- the pipeline, on the running stack ------------------------------------------------------------
def stay(patient_id: str, end: datetime, rng: random.Random) -> dict[str, Any]:
    start = end - timedelta(days=rng.randint(1, 9), hours=rng.randint(0, 12))
    disposition = rng.choice(["home", "home", "home", "snf", "rehab"])
    return {
        "resourceType": "Encounter",
        "identifier": [{"system": "urn:careflow:bench", "value": uuid.uuid4().hex}],
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "hospitalization": {
            "admitSource": {"coding": [{"code": "emd"}]},
            "dischargeDisposition": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                            "code": disposition}]
            },
        },
    }  # fmt: skip


async def create_stays(fhir: Any, patients: list[str], ends: list[datetime], seed: int) -> list[str]:
    rng, ids = random.Random(seed), []
    for first in range(0, len(ends), 100):
        entries = [
            {
                "resource": stay(rng.choice(patients), end, rng),
                "request": {"method": "POST", "url": "Encounter"},
            }
            for end in ends[first : first + 100]
        ]
        out = await fhir.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
        ids += [e["response"]["location"].split("/")[1] for e in out["entry"]]
    return ids


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
    )


async def pipeline_bench(steady: int, rate: float, backfill: int, batch: int) -> None:
    from careflow import task_queues
    from careflow.audit.trail import PostgresAuditTrail
    from careflow.config import load_settings
    from careflow.db.pool import create_pool
    from careflow.fhir.auth import token_provider
    from careflow.fhir.client import FhirClient
    from careflow.models.readmission import DischargeSource, ModelAlias, NightlyInput
    from careflow.readmission.registry import open_registry
    from careflow.security.logging import configure_logging
    from careflow.security.temporal import connect
    from starters.clients.readmission import start_discharge
    from workflows import search_attributes as sa
    from workflows.readmission import ReadmissionNightlyWorkflow, ReadmissionRiskWorkflow

    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    champion = open_registry(settings).by_alias(ModelAlias.CHAMPION)
    if champion is None:
        raise SystemExit("no champion model: run `make demo-risk` first")
    client = await connect(settings)
    pool = await create_pool(settings)
    try:
        async with FhirClient(settings.fhir_base_url, audit=PostgresAuditTrail(pool), actor="risk-bench",
                              token=token_provider(settings)) as fhir:  # fmt: skip
            patients = [str(p["id"]) for p in await fhir.search("Patient", {"_count": "50"})][:50]
            if not patients:
                raise SystemExit("no patients in the EHR: `careflow seed ehr --patients 20 --seed 7`")
            now = datetime.now(UTC)
            print(f"champion v{champion.version}; {len(patients)} seeded patients; creating "
                  f"{steady + backfill:,} discharges in the sandbox EHR")  # fmt: skip
            t0 = time.perf_counter()
            steady_ids = await create_stays(fhir, patients, [now - timedelta(minutes=5)] * steady, 1)
            spread = [
                now - timedelta(minutes=10 + random.Random(i).randint(0, 23 * 60)) for i in range(backfill)
            ]
            backfill_ids = await create_stays(fhir, patients, spread, 2)
            print(f"  created in {time.perf_counter() - t0:.0f} s")
    finally:
        await pool.close()

    # one at a time: event -> RiskAssessment written (the workflow's result comes after the write)
    latencies: list[float] = []

    async def one(encounter_id: str) -> None:
        t = time.perf_counter()
        started = await start_discharge(client, encounter_id, DischargeSource.ADT)
        await client.get_workflow_handle_for(ReadmissionRiskWorkflow.run, started.workflow_id).result()
        latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    pending = []
    for i, e in enumerate(steady_ids):
        pending.append(asyncio.ensure_future(one(e)))
        await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
    await asyncio.gather(*pending)
    p50, p95 = pct(latencies, 50), pct(latencies, 95)
    print(f"discharge -> RiskAssessment, {steady} discharges at {rate:g}/s "
          f"({rate * 86400 / 300:.0f}x the seed's 300/day): p50 {p50:.2f} s, p95 {p95:.2f} s, "
          f"max {max(latencies):.2f} s "
          f"(SLA {SLA_S:.0f} s: p95 at {p95 / SLA_S:.5f} of it)")  # fmt: skip

    wid = f"readmission-nightly-bench-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    summary = await client.execute_workflow(
        ReadmissionNightlyWorkflow.run,
        NightlyInput(batch_size=batch),
        id=wid,
        task_queue=task_queues.MAIN,
        search_attributes=sa.at_start("readmission", "nightly", "default"),
    )
    took = time.perf_counter() - t0
    print(f"nightly backfill {wid}: {summary.discharged:,} discharged in the window, "
          f"{summary.already_scored:,} already scored, {summary.started:,} started, "
          f"{summary.scored:,} scored, {summary.not_scored} not scored; {took:.0f} s for the batch "
          f"({summary.started / took:.1f}/s; SLA {SLA_S:.0f} s: "
          f"{took / SLA_S:.3f} of it)")  # fmt: skip
    q = summary.quality
    if q is not None:
        print(f"  quality: PSI {q.psi} (threshold {q.psi_threshold}), shifted {q.shifted}; "
              f"{q.scored} champion scores of {q.discharged} discharges")  # fmt: skip
    print(f"  {len(backfill_ids):,} backfill stays created for this run; see `careflow risk list --all`")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--discharges", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--pipeline", action="store_true", help="measure the running stack (make demo-risk first)"
    )
    ap.add_argument("--steady", type=int, default=60, help="discharges sent one at a time")
    ap.add_argument("--rate", type=float, default=1.0, help="discharges per second in the steady phase")
    ap.add_argument("--backfill", type=int, default=3000, help="discharges for the nightly backfill")
    ap.add_argument("--batch", type=int, default=50, help="the nightly run's batch size")
    args = ap.parse_args()
    if args.pipeline:
        asyncio.run(pipeline_bench(args.steady, args.rate, args.backfill, args.batch))
    else:
        model_bench(args.discharges, args.seed)


if __name__ == "__main__":
    main()
