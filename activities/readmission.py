"""Activities of readmission risk scoring: read a discharge from the EHR, score it with the registry's
champion (and the challenger in shadow), write the RiskAssessment, the care-coordination Task and the
worklist row; the nightly run's unscored discharges and drift check; training and promotion.

Thin: the logic is in careflow/readmission/.  Idempotent: FHIR writes are conditional creates keyed
by `step_key(workflow id, step)`, rows upsert on (encounter, role, version), and registering a model
finds the version its earlier attempt made.  MLflow and LightGBM are synchronous: they run in threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import numpy as np
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fhir import application_error
from careflow.fhir.client import FhirClient
from careflow.fhir.errors import FhirError, FhirNotFound
from careflow.idempotency import step_identifier, step_key
from careflow.models.readmission import (
    DischargeRecord,
    ModelAlias,
    Outcomes,
    Promotion,
    QualityReport,
    QualityRequest,
    ReadRequest,
    RiskTier,
    ScoreRequest,
    Scores,
    SubgroupFlag,
    TrainedVersion,
    TrainingInput,
    Unscored,
    Window,
    WriteRequest,
    Written,
)
from careflow.readmission import fhir_features, scoring, store
from careflow.readmission.features import lace
from careflow.readmission.registry import ModelRegistry, PromotionBlocked, RegistryError
from careflow.readmission.resources import care_task, risk_assessment
from careflow.security.logging import get_logger

if TYPE_CHECKING:
    from careflow.readmission.training import TrainingRun

log = get_logger("careflow.readmission")

# The EHR may learn of a discharge after the ADT message does: an unknown encounter is retried for this
# long after the event, then the workflow ends as unknown-encounter.
ENCOUNTER_GRACE = timedelta(hours=1)
OUTCOME_WINDOW = timedelta(days=30)  # the outcome the model predicts: readmitted within 30 days


class ReadmissionActivities:
    """Built once per worker process; the registry (MLflow) on first use."""

    def __init__(
        self, fhir: FhirClient, pool: asyncpg.Pool, registry: Callable[[], ModelRegistry], identity: str
    ) -> None:
        self._fhir = fhir
        self._pool = pool
        self._registry = registry
        self._identity = identity

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.read_discharge,
            self.score,
            self.write,
            self.unscored,
            self.quality_check,
            self.settle_outcomes,
            self.train,
            self.promote,
        ]

    async def _registry_call(self, fn: Callable[[ModelRegistry], Any]) -> Any:
        return await asyncio.to_thread(lambda: fn(self._registry()))

    # -- one discharge ----------------------------------------------------------------------------
    @activity.defn(name="readmission.read_discharge")
    async def read_discharge(self, req: ReadRequest) -> DischargeRecord:
        wid = activity.info().workflow_id or ""
        try:
            encounter = await self._encounter(req.encounter_id, wid)
            if encounter is None:
                late = datetime.now(UTC) - req.received_at > ENCOUNTER_GRACE
                raise ApplicationError(
                    f"the EHR has no Encounter {req.encounter_id}",
                    type="EncounterNotFound",
                    non_retryable=late,  # until then the EHR may still be catching up with the ADT
                )
            try:
                start, end = fhir_features.stay(encounter)
            except fhir_features.NotADischarge as exc:
                raise ApplicationError(str(exc), type="NotADischarge", non_retryable=True) from None
            patient_id = str((encounter.get("subject") or {}).get("reference", "")).removeprefix("Patient/")
            patient = await self._fhir.read("Patient", patient_id, workflow_id=wid)
            by_patient = {"patient": patient_id}
            conditions = await self._fhir.search("Condition", by_patient, workflow_id=wid)
            encounters = await self._fhir.search(
                "Encounter",
                {**by_patient, "date": f"ge{(start - timedelta(days=366)).date()}"},
                workflow_id=wid,
            )
            loincs = ",".join(f"http://loinc.org|{code}" for code in fhir_features.LABS.values())
            observations = await self._fhir.search(
                "Observation", {**by_patient, "code": loincs, "date": f"ge{start.date()}"}, workflow_id=wid
            )
            medications = await self._fhir.search("MedicationRequest", by_patient, workflow_id=wid)
        except FhirError as exc:
            raise application_error(exc) from None
        try:
            features = fhir_features.discharge_features(
                encounter, patient, conditions, encounters, observations, medications
            )
        except fhir_features.NotADischarge as exc:
            raise ApplicationError(str(exc), type="NotADischarge", non_retryable=True) from None
        basis = [f"Encounter/{encounter['id']}", f"Patient/{patient_id}"]
        basis += [f"Condition/{r['id']}" for r in conditions] + [
            f"Observation/{r['id']}" for r in observations
        ]
        return DischargeRecord(
            encounter_id=str(encounter["id"]),
            patient_id=patient_id,
            discharged_at=end,
            features=features,
            lace=lace(features),
            basis=basis,
        )

    async def _encounter(self, key: str, wid: str) -> dict[str, Any] | None:
        """The Encounter by id, else by identifier (a hospital's visit number in PV1-19)."""
        try:
            return await self._fhir.read("Encounter", key, workflow_id=wid)
        except FhirNotFound:
            found = await self._fhir.search("Encounter", {"identifier": key}, workflow_id=wid)
            return found[0] if len(found) == 1 else None

    @activity.defn(name="readmission.score")
    async def score(self, req: ScoreRequest) -> Scores:
        def run(registry: ModelRegistry) -> Scores:
            champion = registry.by_alias(ModelAlias.CHAMPION)
            if champion is None:
                raise ApplicationError(
                    "no model version is champion yet: `careflow risk train`",
                    type="NoChampion",
                    non_retryable=True,
                )
            model = registry.load(champion.version)
            out = Scores(
                champion=scoring.score(model.trained, model.cuts, model.version, req.record.features)
            )
            challenger = registry.by_alias(ModelAlias.CHALLENGER)
            if challenger is not None and challenger.version != champion.version:
                shadow = registry.load(challenger.version)
                out.challenger = scoring.score(
                    shadow.trained, shadow.cuts, shadow.version, req.record.features
                )
            return out

        scores: Scores = await self._registry_call(run)
        return scores

    @activity.defn(name="readmission.write")
    async def write(self, req: WriteRequest) -> Written:
        """The FHIR RiskAssessment (every discharge), the care-coordination Task (high tier), the rows."""
        wid = req.workflow_id
        champion = req.scores.champion
        try:
            ra, _ = await self._fhir.conditional_create(
                risk_assessment(req), step_identifier(wid, "risk-assessment"), workflow_id=wid
            )
            task_id = None
            if champion.tier is RiskTier.HIGH:
                task = care_task(req, str(ra["id"]))
                created, _ = await self._fhir.conditional_create(
                    task, step_identifier(wid, "care-coordination-task"), workflow_id=wid
                )
                task_id = str(created["id"])
        except FhirError as exc:
            raise application_error(exc) from None
        await store.save(self._pool, req, req.tenant_id, str(ra["id"]), task_id)
        shadow = req.scores.challenger.version if req.scores.challenger else ""
        log.info(
            "readmission scored",
            workflow_id=wid,
            model_version=champion.version,
            tier=champion.tier.value,
            shadow_version=shadow,
        )
        return Written(risk_assessment_id=str(ra["id"]), task_id=task_id)

    # -- nightly ----------------------------------------------------------------------------------
    @activity.defn(name="readmission.unscored")
    async def unscored(self, window: Window) -> Unscored:
        """Finished inpatient encounters discharged in the window, and which have no score yet."""
        wid = activity.info().workflow_id or ""
        params = {"status": "finished", "date": f"ge{window.since.isoformat()}", "_count": "200"}
        try:
            found = await self._fhir.search("Encounter", params, workflow_id=wid)
        except FhirError as exc:
            raise application_error(exc) from None
        discharged = sorted(
            str(e["id"])
            for e in found
            if (end := fhir_features.stay_end(e)) is not None  # finished inpatient stays only
            and window.since <= end < window.until
        )
        done = await store.scored(self._pool, discharged)
        return Unscored(
            discharged=len(discharged),
            already_scored=len(done),
            encounter_ids=[e for e in discharged if e not in done],
        )

    @activity.defn(name="readmission.quality_check")
    async def quality_check(self, req: QualityRequest) -> QualityReport:
        """The night's champion scores against the champion's training baseline (PSI); an alert record and
        a log event when the distribution shifted."""
        champion = await self._registry_call(lambda r: r.by_alias(ModelAlias.CHAMPION))
        if champion is None:
            raise ApplicationError("no champion to check", type="NoChampion", non_retryable=True)
        model = await self._registry_call(lambda r: r.load(champion.version))
        w = req.window
        scores = await store.window_scores(self._pool, w.since, w.until, champion.version)
        found = scoring.drift(model.baseline, np.asarray(scores, dtype=np.float64))
        report = QualityReport(
            champion_version=champion.version,
            discharged=req.discharged,
            scored=found.n,
            psi=None if found.psi is None else round(found.psi, 4),
            psi_threshold=round(found.threshold, 4),
            shifted=found.shifted,
        )
        if found.shifted and found.psi is not None:
            await store.record_alert(
                self._pool,
                req.workflow_id,
                champion.version,
                w.since,
                w.until,
                found.n,
                req.discharged,
                found.psi,
                found.threshold,
            )
            log.warning(
                "readmission score distribution shifted",
                workflow_id=req.workflow_id,
                model_version=champion.version,
                psi=report.psi,
                threshold=report.psi_threshold,
                scored=found.n,
            )
        return report

    @activity.defn(name="readmission.settle_outcomes")
    async def settle_outcomes(self, until: datetime) -> Outcomes:
        """The 30-day outcome of scored discharges more than 30 days before `until` (another inpatient
        stay in the EHR within 30 days): what `careflow risk compare` measures the models against."""
        wid = activity.info().workflow_id or ""
        due = await store.unsettled(self._pool, until - OUTCOME_WINDOW)
        by_patient: dict[str, list[tuple[str, datetime]]] = {}
        for encounter_id, patient_id, discharged_at in due:
            by_patient.setdefault(patient_id, []).append((encounter_id, discharged_at))
        settled = readmitted = 0
        try:
            for patient_id, stays in by_patient.items():
                first = min(at for _, at in stays)
                encounters = await self._fhir.search(
                    "Encounter", {"patient": patient_id, "date": f"ge{first.date()}"}, workflow_id=wid
                )
                for encounter_id, discharged_at in stays:
                    outcome = fhir_features.readmitted_within(encounter_id, discharged_at, encounters)
                    await store.record_outcome(self._pool, encounter_id, outcome)
                    settled += 1
                    readmitted += outcome
        except FhirError as exc:
            raise application_error(exc) from None
        return Outcomes(settled=settled, readmitted=readmitted)

    # -- training ---------------------------------------------------------------------------------
    @activity.defn(name="readmission.train")
    async def train(self, inp: TrainingInput) -> TrainedVersion:
        """Generate, train, evaluate and register one version; heartbeats the training's progress."""
        wid = activity.info().workflow_id or ""
        progress: dict[str, Any] = {"phase": "starting", "done": 0, "total": 1}

        def report(phase: str, done: int, total: int) -> None:
            progress.update(phase=phase, done=done, total=total)

        from careflow.readmission import training

        def run(registry: ModelRegistry) -> TrainedVersion:
            had_champion = registry.by_alias(ModelAlias.CHAMPION) is not None
            result = training.run(inp.discharges, inp.seed, report)
            v = registry.register(result, step_key(wid, "train"), trained_by=wid)
            return trained_version(v.version, result, had_champion)

        job = asyncio.ensure_future(self._registry_call(run))
        while not job.done():
            activity.heartbeat(dict(progress))
            await asyncio.wait([job], timeout=2.0)
        out: TrainedVersion = job.result()
        return out

    @activity.defn(name="readmission.promote")
    async def promote(self, p: Promotion) -> str:
        def run(registry: ModelRegistry) -> str:
            if p.approved_by:
                registry.approve(p.version, p.approved_by, p.note)
            try:
                return ",".join(registry.promote(p.version, p.alias).aliases)
            except PromotionBlocked as exc:
                raise ApplicationError(str(exc), type="PromotionBlocked", non_retryable=True) from None
            except RegistryError as exc:
                raise ApplicationError(str(exc), type="RegistryError", non_retryable=True) from None

        aliases: str = await self._registry_call(run)
        return aliases


def trained_version(version: str, run: TrainingRun, had_champion: bool) -> TrainedVersion:
    overall = run.report.overall
    return TrainedVersion(
        version=version,
        auroc=round(run.auroc, 4),
        brier=round(overall.brier, 4),
        sensitivity=None if overall.sensitivity is None else round(overall.sensitivity, 4),
        lace_auroc=round(run.lace_auroc, 4),
        best_auroc=round(run.best_auroc, 4),
        data_hash=run.data_hash,
        rounds=run.rounds,
        seconds=round(run.seconds, 2),
        had_champion=had_champion,
        flagged=[
            SubgroupFlag(
                attribute=r.attribute,
                value=r.value,
                n=r.metrics.n,
                auroc=round(r.metrics.auroc or 0, 4),
                overall_auroc=round(run.auroc, 4),
            )
            for r in run.report.flagged
        ],
    )
