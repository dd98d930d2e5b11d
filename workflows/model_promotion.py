"""The note model's promotion saga (seed P9, P5, P17), and the golden-query check.

- `ModelPromotionWorkflow`, id `model-promotion-<feature>-<candidate>`: prepare -> fine-tune (careflow-gpu,
  resumable) -> evaluate (automated gate) -> register -> blind review (validated `review` updates, a
  deadline) -> the 510(k) clearance for a diagnostic intended use (`clearance` update) -> shadow (a
  week) -> canary (10 %, golden queries then the flag rate every few minutes) -> champion.  Every failed
  gate, and an operator's `rollback` update at any time, undoes what the saga did: the routing goes back
  to the champion before it, the version is marked rejected in the registry, operations are alerted,
  and the run ends with a named outcome.
- Each deployment step's golden-query gate is a `GoldenEvaluationWorkflow` child
  (workflows/golden_evaluation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.model_promotion import ModelActivities, PromotionActivities
    from careflow.finetune import blind
    from careflow.finetune.registry import CLEARANCE, DIAGNOSTIC_USES
    from careflow.models.model_promotion import (
        PIPELINE,
        BlindVote,
        Clearance,
        DeploymentAction,
        DeployRequest,
        EvaluateRequest,
        FlagRateRequest,
        GoldenInput,
        GoldenResult,
        PrepareRequest,
        PromotionInput,
        PromotionStage,
        PromotionStatus,
        RegisterRequest,
        RejectRequest,
        ReviewTally,
        Rollback,
        TagRequest,
        TrainRequest,
        golden_id,
    )
    from careflow.observe.golden import FLAG_WINDOW
    from workflows import retry_rules
    from workflows import search_attributes as sa
    from workflows.golden_evaluation import GoldenEvaluationWorkflow, alert_operations

Stage = PromotionStage


@workflow.defn(name="ModelPromotionWorkflow")
class ModelPromotionWorkflow:
    def __init__(self) -> None:
        self._s = PromotionStatus()
        self._votes: list[BlindVote] = []
        self._order: list[bool] = []
        self._clearance: Clearance | None = None
        self._rollback: Rollback | None = None
        self._visible = False
        self._deployed = False  # the routing names the candidate: a failure must route it out again
        self._feature = ""

    @workflow.run
    async def run(self, inp: PromotionInput) -> PromotionStatus:
        wid, s = workflow.info().workflow_id, self._s
        self._visible, self._feature = inp.search_attributes, inp.feature
        self._stage(Stage.PREPARING)
        prepared = await retry_rules.execute(
            retry_rules.MODEL_PREPARE,
            ModelActivities.prepare,
            PrepareRequest(workflow_id=wid, data=inp.data),
            task_queue=inp.model_queue,
        )
        s.prepared = prepared
        if prepared.counts.get("train", 0) < inp.min_examples:
            return await self._fail(
                Stage.NO_DATA,
                f"{prepared.counts.get('train', 0)} training examples "
                f"survived preparation; at least {inp.min_examples} are needed",
            )
        if stopped := await self._stopped():
            return stopped

        self._stage(Stage.TRAINING)
        trained = await retry_rules.execute(
            retry_rules.MODEL_TRAIN,
            ModelActivities.train,
            TrainRequest(workflow_id=wid, examples_ref=prepared.examples_ref, train=inp.train),
            task_queue=inp.model_queue,
        )
        s.trained = trained
        if stopped := await self._stopped():
            return stopped

        self._stage(Stage.EVALUATING)
        evaluated = await retry_rules.execute(
            retry_rules.MODEL_EVALUATE,
            ModelActivities.evaluate,
            EvaluateRequest(
                workflow_id=wid,
                examples_ref=prepared.examples_ref,
                adapter_ref=trained.adapter_ref,
                train=inp.train,
                review_pairs=inp.review_pairs,
            ),
            task_queue=inp.model_queue,
        )
        s.scores, s.failures, s.pairs_ref = evaluated.scores, evaluated.failures, evaluated.pairs_ref
        self._order = evaluated.candidate_is_a
        registered = await retry_rules.execute(
            retry_rules.MODEL_REGISTRY,
            PromotionActivities.register,
            RegisterRequest(
                workflow_id=wid,
                feature=inp.feature,
                candidate=inp.candidate,
                intended_use=inp.intended_use,
                train=inp.train,
                prepared=prepared,
                trained=trained,
                evaluated=evaluated,
            ),
        )
        s.version = registered.version
        if evaluated.failures:
            return await self._fail(Stage.EVALUATION_FAILED, "; ".join(evaluated.failures))
        if not self._order:
            return await self._fail(Stage.NO_DATA, "no held-out notes to compare blind")
        if stopped := await self._stopped():
            return stopped

        # -- the blind comparison: every pair voted on before the deadline ---------------------------
        self._stage(Stage.AWAITING_REVIEW)
        s.review = self._public_tally()
        if not await self._until(lambda: blind.complete(self._tally()), hours=inp.review_hours):
            if stopped := await self._stopped():
                return stopped
            return await self._fail(
                Stage.REVIEW_EXPIRED,
                f"{self._tally().voted} of {len(self._order)} pairs voted on within {inp.review_hours:g} h",
            )
        s.review = tally = self._tally()
        await self._tag(
            {
                "blind_review": f"{tally.pairs} pairs; votes: candidate {tally.candidate}, "
                f"base {tally.base}, same {tally.same}",
                "approved_by": ",".join(sorted({v.reviewer for v in self._votes})),
            }
        )
        if not blind.passes(tally):
            return await self._fail(
                Stage.REVIEW_REJECTED,
                f"reviewers preferred the base in {tally.base} pairs, the candidate in {tally.candidate}",
            )

        # -- SaMD (P17): a diagnostic intended use needs its FDA clearance on record -------------------
        if inp.intended_use in DIAGNOSTIC_USES:
            if self._clearance is None:
                self._stage(Stage.AWAITING_CLEARANCE)
                if not await self._until(lambda: self._clearance is not None, hours=inp.clearance_hours):
                    if stopped := await self._stopped():
                        return stopped
                    return await self._fail(
                        Stage.CLEARANCE_MISSING,
                        f"intended use '{inp.intended_use}' "
                        f"needs an FDA 510(k) clearance; none within {inp.clearance_hours:g} h",
                    )
            assert self._clearance is not None
            await self._tag({"fda_clearance": self._clearance.number, "fda_clearance_by": self._clearance.by})
            s.clearance = self._clearance.number

        # -- shadow: a week beside the champion, logged, never served ----------------------------------
        if inp.shadow_hours > 0:  # 0: no shadow period (a hotfix of a champion already shadowed)
            if failed := await self._deploy_step(inp, DeploymentAction.SHADOW):
                return failed
            await self._until(lambda: False, hours=inp.shadow_hours)
            if stopped := await self._stopped():
                return stopped

        # -- canary: 10 % of requests; golden queries first, then the users' flags ---------------------
        if failed := await self._deploy_step(inp, DeploymentAction.CANARY):
            return failed
        ends = workflow.now() + timedelta(hours=inp.canary_hours)
        while workflow.now() < ends:
            left = (ends - workflow.now()).total_seconds() / 3600
            await self._until(lambda: False, hours=min(inp.check_minutes / 60, left))
            if stopped := await self._stopped():
                return stopped
            rate = await retry_rules.execute(
                retry_rules.MODEL_STEP,
                PromotionActivities.flag_rate,
                FlagRateRequest(
                    feature=inp.feature, version=registered.version, since=workflow.now() - FLAG_WINDOW
                ),
            )
            s.flag_rate = rate
            if rate.breached:
                return await self._fail(
                    Stage.FLAGGED,
                    f"{rate.flags} of {rate.responses} answers flagged "
                    f"({rate.rate:.1%}) in the last 30 minutes; the limit is 2 %",
                )

        # -- champion: the one before stays `previous`, a rollback away -------------------------------
        if stopped := await self._stopped():
            return stopped
        try:
            await self._deploy(inp, DeploymentAction.PROMOTE)
        except ActivityError as err:
            if retry_rules.failure_type(err) != "PromotionBlocked":
                raise
            return await self._fail(Stage.PROMOTION_BLOCKED, retry_rules.failure_message(err))
        self._deployed = False
        s.golden.append(await self._golden(inp, "promote"))  # the new champion's baseline
        self._stage(Stage.PROMOTED)
        return s

    # -- steps ----------------------------------------------------------------------------------------
    async def _deploy(self, inp: PromotionInput, action: DeploymentAction) -> None:
        state = await retry_rules.execute(
            retry_rules.MODEL_DEPLOY,
            PromotionActivities.deploy,
            DeployRequest(
                workflow_id=workflow.info().workflow_id,
                feature=inp.feature,
                version=self._s.version or "",
                action=action,
                percent=inp.canary_percent,
            ),
        )
        if action is not DeploymentAction.PROMOTE:
            self._deployed = True
            if self._s.champion_before is None:
                self._s.champion_before = state.champion

    async def _deploy_step(self, inp: PromotionInput, action: DeploymentAction) -> PromotionStatus | None:
        """Route the candidate into `action`'s stage, then its golden-query gate (a regression fails it)."""
        self._stage(Stage(action.value))
        await self._deploy(inp, action)
        result = await self._golden(inp, action.value)
        self._s.golden.append(result)
        if result.regressed:
            return await self._fail(
                Stage.GOLDEN_REGRESSED,
                f"{action.value}: golden score {result.score:.3f} is "
                f"{result.drop:.0%} below the champion's {result.baseline:.3f} (limit 10 %)",
            )
        return None

    async def _golden(self, inp: PromotionInput, trigger: str) -> GoldenResult:
        wid = workflow.info().workflow_id
        return await workflow.execute_child_workflow(
            GoldenEvaluationWorkflow.run,
            GoldenInput(
                feature=inp.feature,
                version=self._s.version,
                trigger=trigger,
                started_by=wid,
                model_queue=inp.model_queue,
            ),
            id=golden_id(inp.feature, f"{inp.candidate}-{trigger}"),
        )

    async def _tag(self, tags: dict[str, str]) -> None:
        await retry_rules.execute(
            retry_rules.MODEL_REGISTRY,
            PromotionActivities.tag,
            TagRequest(version=self._s.version or "", tags=tags),
        )

    async def _until(self, done: Callable[[], bool], hours: float) -> bool:
        """Wait for `done` at most `hours`; an operator's rollback ends the wait early (False)."""
        if hours <= 0:
            return self._rollback is None and done()
        try:
            await workflow.wait_condition(
                lambda: done() or self._rollback is not None, timeout=timedelta(hours=hours)
            )
        except TimeoutError:
            return False
        return self._rollback is None and done()

    async def _stopped(self) -> PromotionStatus | None:
        """An operator's rollback, honoured between steps."""
        if self._rollback is None:
            return None
        return await self._fail(Stage.ROLLED_BACK, f"{self._rollback.reason} (by {self._rollback.by})")

    async def _fail(self, outcome: Stage, reason: str) -> PromotionStatus:
        """Compensate: route the candidate out, mark it rejected, tell operations; then the outcome."""
        wid, s = workflow.info().workflow_id, self._s
        inp_feature = self._feature
        if self._deployed:
            back = s.champion_before
            await retry_rules.execute(
                retry_rules.MODEL_DEPLOY,
                PromotionActivities.deploy,
                DeployRequest(
                    workflow_id=wid,
                    feature=inp_feature,
                    version=s.version or "",
                    action=DeploymentAction.ROLLBACK,
                    back_to=back,
                    reason=f"{outcome.value}: {reason}",
                ),
            )
            self._deployed = False
            s.undone.append(f"routing: {inp_feature} answered by {back or 'the base model'} again")
        if s.version:
            await retry_rules.execute(
                retry_rules.MODEL_REGISTRY,
                PromotionActivities.reject,
                RejectRequest(workflow_id=wid, version=s.version, reason=f"{outcome.value}: {reason}"),
            )
            s.undone.append(f"registry: version {s.version} rejected")
        await alert_operations(
            inp_feature, s.version or "", outcome.value, reason, step=f"alert-{outcome.value}"
        )
        s.reason = reason
        self._stage(outcome)
        return s

    # -- reviewers ------------------------------------------------------------------------------------
    def _tally(self) -> ReviewTally:
        return blind.tally(self._votes, self._order)

    def _public_tally(self) -> ReviewTally:
        """While the review is open, only how far it is: per-side counts would reveal the hidden order."""
        t = self._tally()
        return ReviewTally(pairs=t.pairs, voted=t.voted)

    @workflow.update(name="review")
    def review(self, vote: BlindVote) -> ReviewTally:
        """A reviewer's preference on one blind pair (A, B or the same); a later vote replaces theirs."""
        self._votes.append(vote)
        self._s.review = self._public_tally()
        return self._s.review

    @review.validator
    def _check_review(self, vote: BlindVote) -> None:
        if self._s.stage is not Stage.AWAITING_REVIEW:
            raise ValueError(f"no blind review is open: the promotion is {self._s.stage.value}")
        if vote.pair >= len(self._order):
            raise ValueError(f"pair {vote.pair} does not exist: pairs are 0-{len(self._order) - 1}")

    @workflow.update(name="clearance")
    def clearance(self, c: Clearance) -> PromotionStatus:
        """The FDA 510(k) number for a diagnostic intended use."""
        self._clearance = c
        return self._s

    @clearance.validator
    def _check_clearance(self, c: Clearance) -> None:
        if self._s.stage.settled or self._s.stage in (Stage.SHADOW, Stage.CANARY):
            raise ValueError(
                f"the clearance is due before deployment: the promotion is {self._s.stage.value}"
            )
        if not CLEARANCE.match(c.number):
            raise ValueError(f"'{c.number}' is not a 510(k) number (K and six digits, e.g. K213456)")

    @workflow.update(name="rollback")
    async def rollback(self, r: Rollback) -> PromotionStatus:
        """An operator stops the candidate now: the same compensation as a failed gate.  Returns once done."""
        self._rollback = r
        await workflow.wait_condition(lambda: self._s.stage.settled)
        return self._s

    @rollback.validator
    def _check_rollback(self, r: Rollback) -> None:
        if self._s.stage.settled:
            raise ValueError(f"nothing to roll back: the promotion is {self._s.stage.value}")
        if self._rollback is not None:
            raise ValueError(f"a rollback is under way (by {self._rollback.by})")

    def _stage(self, stage: Stage) -> None:
        self._s.stage = stage
        self._s.stages.append((stage.value, workflow.now()))
        if self._visible:
            workflow.upsert_search_attributes(sa.updates(stage.value, pipeline=PIPELINE))

    @workflow.query(name="status")
    def status(self) -> PromotionStatus:
        return self._s
