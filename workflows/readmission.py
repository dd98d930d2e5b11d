"""Readmission risk (seed P11, P12): three workflows.

- `ReadmissionRiskWorkflow`, id `readmission-<encounter id>`: one per discharge (ADT^A03, the FHIR
  discharge event, or the nightly safety net; duplicates attach).  Features from the EHR -> champion
  score (challenger in shadow) -> for the high tier an AI narrative citing only the model's factors ->
  RiskAssessment, care-coordination Task, worklist row.  Ends scored, or with a named outcome.
- `ReadmissionNightlyWorkflow`, started by the `readmission-nightly` Schedule: scores every discharge of
  the scheduled window that has none yet, in batches of child workflows, then checks the night's score
  distribution against the champion's training baseline (PSI), and records the 30-day outcome of the
  discharges scored a month before (what `careflow risk compare` judges the models by).
- `ReadmissionTrainingWorkflow`: trains, evaluates and registers a model version (heartbeating), then
  points an alias at it; a flagged subgroup holds champion until a reviewer approves (update).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.llm import DraftInput, LlmActivities
    from activities.readmission import ReadmissionActivities
    from careflow.idempotency import step_key
    from careflow.llm.tasks import ReadmissionNarrativeInput, RiskFactor, factor_evidence
    from careflow.llm.teams import PIPELINES_TEAM
    from careflow.llm.types import Tier
    from careflow.models.readmission import (
        PIPELINE,
        DischargeInput,
        DischargeSource,
        ModelAlias,
        ModelScore,
        NightlyInput,
        NightlyResume,
        NightlySummary,
        Promotion,
        QualityRequest,
        ReadmissionStage,
        ReadmissionStatus,
        ReadRequest,
        RiskTier,
        ScoreRequest,
        SubgroupApproval,
        TrainingInput,
        TrainingStage,
        TrainingStatus,
        Window,
        WriteRequest,
        workflow_id,
    )
    from careflow.readmission.features import describe
    from workflows import retry_rules
    from workflows import search_attributes as sa

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")  # set by a Schedule


def narrative_input(score: ModelScore) -> ReadmissionNarrativeInput:
    """The narrative's only input: the score and the model's top factors, each an evidence item."""
    return ReadmissionNarrativeInput(
        risk_score=score.probability,
        risk_tier=score.tier.value,
        model_version=score.version,
        factors=[
            RiskFactor(
                evidence_id=f"factor:{i}",
                name=f.label,
                value=describe(f.feature, f.value),
                contribution=f.contribution,
            )
            for i, f in enumerate(score.factors, 1)
        ],
    )


@workflow.defn(name="ReadmissionRiskWorkflow")
class ReadmissionRiskWorkflow:
    def __init__(self) -> None:
        self._status = ReadmissionStatus()
        self._visible = False

    @workflow.run
    async def run(self, inp: DischargeInput) -> ReadmissionStatus:
        wid = workflow.info().workflow_id
        self._visible = inp.search_attributes
        self._status.source = inp.source
        self._stage(ReadmissionStage.READING)
        try:
            record = await retry_rules.execute(
                retry_rules.RISK_READ,
                ReadmissionActivities.read_discharge,
                ReadRequest(encounter_id=inp.encounter_id, received_at=workflow.now()),
            )
        except ActivityError as err:
            outcome = {
                "NotADischarge": ReadmissionStage.NOT_A_DISCHARGE,
                "EncounterNotFound": ReadmissionStage.UNKNOWN_ENCOUNTER,
            }.get(retry_rules.failure_type(err) or "")
            if outcome is None:
                raise
            return self._end(outcome, retry_rules.failure_message(err))

        self._stage(ReadmissionStage.SCORING)
        try:
            scores = await retry_rules.execute(
                retry_rules.RISK_SCORE,
                ReadmissionActivities.score,
                ScoreRequest(record=record, workflow_id=wid),
            )
        except ActivityError as err:
            if retry_rules.failure_type(err) != "NoChampion":
                raise
            return self._end(ReadmissionStage.NO_MODEL, retry_rules.failure_message(err))
        champion = scores.champion
        s = self._status
        s.model_version, s.probability, s.tier = champion.version, champion.probability, champion.tier

        narrative, engine = "", ""
        if champion.tier is RiskTier.HIGH:
            task_input = narrative_input(champion)
            req = DraftInput.of(
                task_input,
                team_id=PIPELINES_TEAM,
                use_case=PIPELINE,
                tier=Tier.STANDARD,
                evidence=factor_evidence(task_input.factors),
                request_id=step_key(wid, "narrative"),
                patient_id=record.patient_id,
            )
            try:
                out = await retry_rules.execute(retry_rules.RISK_NARRATIVE, LlmActivities.draft, req)
            except ActivityError:
                pass  # the worklist shows the model's factors; the narrative only explains them
            else:
                narrative, engine = str(out.output.get("narrative", "")), f"{out.provider}/{out.model}"

        self._stage(ReadmissionStage.WRITING)
        written = await retry_rules.execute(
            retry_rules.RISK_WRITE,
            ReadmissionActivities.write,
            WriteRequest(
                workflow_id=wid,
                source=inp.source,
                tenant_id=inp.tenant_id,
                record=record,
                scores=scores,
                narrative=narrative,
                narrative_engine=engine,
            ),
        )
        s.risk_assessment_id, s.task_id = written.risk_assessment_id, written.task_id or ""
        self._stage(ReadmissionStage.SCORED)
        return s

    def _end(self, stage: ReadmissionStage, reason: str) -> ReadmissionStatus:
        self._status.reason = reason
        self._stage(stage)
        return self._status

    def _stage(self, stage: ReadmissionStage) -> None:
        self._status.stage = stage
        if self._visible:  # ids and enums only: never PHI (the risk tier stays in the encrypted status)
            workflow.upsert_search_attributes(sa.updates(stage.value))

    @workflow.query(name="status")
    def status(self) -> ReadmissionStatus:
        return self._status


@workflow.defn(name="ReadmissionNightlyWorkflow")
class ReadmissionNightlyWorkflow:
    def __init__(self) -> None:
        self._summary: NightlySummary | None = None

    @workflow.run
    async def run(self, inp: NightlyInput) -> NightlySummary:
        wid = workflow.info().workflow_id
        if inp.resume is not None:  # a large night, continued as new: same window, the rest of its list
            summary, ids = inp.resume.summary, inp.resume.remaining
            summary.runs += 1
        else:
            # The window ends at the time the Schedule meant this run for: a caught-up run covers its own
            # night.
            scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START)
            until: datetime = scheduled or workflow.now()
            window = Window(since=until - timedelta(hours=inp.window_hours), until=until)
            found = await retry_rules.execute(retry_rules.RISK_SWEEP, ReadmissionActivities.unscored, window)
            summary = NightlySummary(
                window=window, discharged=found.discharged, already_scored=found.already_scored
            )
            ids = found.encounter_ids
        self._summary = summary
        window = summary.window
        for first in range(0, len(ids), inp.batch_size):
            if first >= inp.children_per_run:
                rest = NightlyResume(summary=summary, remaining=ids[first:])
                workflow.continue_as_new(inp.model_copy(update={"resume": rest}))
            runs = []
            for encounter_id in ids[first : first + inp.batch_size]:
                try:
                    runs.append(
                        await workflow.start_child_workflow(
                            ReadmissionRiskWorkflow.run,
                            DischargeInput(
                                encounter_id=encounter_id,
                                source=DischargeSource.NIGHTLY,
                                tenant_id=inp.tenant_id,
                                search_attributes=inp.search_attributes,
                            ),
                            id=workflow_id(encounter_id),
                            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                            search_attributes=sa.at_start(
                                PIPELINE, ReadmissionStage.RECEIVED.value, inp.tenant_id
                            )
                            if inp.search_attributes
                            else None,
                        )
                    )
                except WorkflowAlreadyStartedError:
                    continue  # its discharge event is being scored right now: attached
            summary.started += len(runs)
            for result in await asyncio.gather(*runs, return_exceptions=True):
                scored = isinstance(result, ReadmissionStatus) and result.stage is ReadmissionStage.SCORED
                summary.scored += scored
                summary.not_scored += not scored
        try:
            summary.quality = await retry_rules.execute(
                retry_rules.RISK_SWEEP,
                ReadmissionActivities.quality_check,
                QualityRequest(window=window, discharged=summary.discharged, workflow_id=wid),
            )
        except ActivityError as err:
            if retry_rules.failure_type(err) != "NoChampion":
                raise
        summary.outcomes = await retry_rules.execute(
            retry_rules.RISK_SWEEP, ReadmissionActivities.settle_outcomes, window.until
        )
        return summary

    @workflow.query(name="summary")
    def summary(self) -> NightlySummary | None:
        return self._summary


@workflow.defn(name="ReadmissionTrainingWorkflow")
class ReadmissionTrainingWorkflow:
    def __init__(self) -> None:
        self._status = TrainingStatus()
        self._visible = False

    @workflow.run
    async def run(self, inp: TrainingInput) -> TrainingStatus:
        self._visible = inp.search_attributes
        self._stage(TrainingStage.TRAINING)
        trained = await retry_rules.execute(retry_rules.RISK_TRAIN, ReadmissionActivities.train, inp)
        self._status.trained = trained
        alias = inp.promote_to or (ModelAlias.CHALLENGER if trained.had_champion else ModelAlias.CHAMPION)
        if alias is ModelAlias.CHAMPION and trained.flagged:
            self._stage(TrainingStage.AWAITING_APPROVAL)
            try:
                await workflow.wait_condition(
                    lambda: self._status.approval is not None,
                    timeout=timedelta(hours=inp.approval_timeout_hours),
                )
            except TimeoutError:
                self._stage(TrainingStage.NOT_PROMOTED)
                return self._status
        approval = self._status.approval
        await retry_rules.execute(
            retry_rules.RISK_PROMOTE,
            ReadmissionActivities.promote,
            Promotion(
                version=trained.version,
                alias=alias,
                approved_by=approval.reviewer if approval else "",
                note=approval.note if approval else "",
            ),
        )
        self._status.alias = alias
        self._stage(TrainingStage.PROMOTED)
        return self._status

    @workflow.update(name="approve_subgroups")
    def approve_subgroups(self, approval: SubgroupApproval) -> TrainingStatus:
        """A reviewer accepts the flagged subgroups: the version may become champion."""
        self._status.approval = approval
        return self._status

    @approve_subgroups.validator
    def _check_approval(self, approval: SubgroupApproval) -> None:
        if self._status.stage is not TrainingStage.AWAITING_APPROVAL:
            raise ValueError(
                f"nothing awaits approval: the training is {self._status.stage.value}"
                + (
                    ""
                    if self._status.trained is None or self._status.trained.flagged
                    else " (no subgroup flagged)"
                )
            )

    def _stage(self, stage: TrainingStage) -> None:
        self._status.stage = stage
        if self._visible:
            workflow.upsert_search_attributes(sa.updates(stage.value, pipeline=PIPELINE))

    @workflow.query(name="status")
    def status(self) -> TrainingStatus:
        return self._status
