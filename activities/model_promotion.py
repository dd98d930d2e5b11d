"""Activities of the note model's promotion saga (seed P9, P5, P17).

`ModelActivities` run on careflow-gpu, one at a time per worker (the model work uses every core, or
the GPU): prepare the export, fine-tune (heartbeating the step and the last checkpoint's PHI store
reference, so a retry after a killed worker resumes there), evaluate, and score golden queries.
`PromotionActivities` run on careflow-main: the registry, the deployment row the gateway reads, the
canary's flag rate and alerts.

Thin: the logic is in careflow/finetune/ and careflow/observe/.  Idempotent: the registry finds the
version an earlier attempt made (its key is workflow id + step), deployment changes and golden runs
are rows keyed the same way, and PHI store objects are content-addressed.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, TypeVar

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import beating
from careflow.config import Settings
from careflow.finetune import blind, deployment, lm, prep
from careflow.finetune.deployment import Stage
from careflow.finetune.registry import NoteModelRegistry, RegistryRefused
from careflow.finetune.serving import BASE, NoteModels, base_path, served_model
from careflow.idempotency import step_key
from careflow.llm.gateway import Gateway
from careflow.llm.teams import PIPELINES_TEAM
from careflow.models.model_promotion import (
    NOTE_DRAFT,
    AlertRequest,
    DeploymentAction,
    DeploymentState,
    DeployRequest,
    Evaluated,
    EvaluateRequest,
    FlagRateRequest,
    FlagRateResult,
    GoldenRequest,
    GoldenResult,
    Prepared,
    PrepareRequest,
    RegisterRequest,
    RejectRequest,
    RestoreRequest,
    RestoreResult,
    TagRequest,
    Trained,
    TrainRequest,
    TrainSpec,
    VersionRef,
)
from careflow.notify.notifier import Notifier
from careflow.observe import feedback, golden, golden_sets, runs
from careflow.phi_store import PhiStore
from careflow.security.logging import get_logger

log = get_logger("careflow.model_promotion")
T = TypeVar("T")


def train_config(spec: TrainSpec) -> lm.TrainConfig:
    return lm.TrainConfig(
        epochs=spec.epochs, batch=spec.batch, lr=spec.lr, rank=spec.rank, alpha=spec.alpha,
        target_epsilon=spec.target_epsilon, checkpoint_every=spec.checkpoint_every,
    )  # fmt: skip


@functools.cache
def _note_draft_golden(embed: Any) -> list[golden.GoldenCase]:
    """Built once per process: the same held-out export every time."""
    return prep.golden_cases(embed)


class ModelActivities:
    """careflow-gpu: the base model and the embedder load once per worker process."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        phi: PhiStore,
        registry: Callable[[], NoteModelRegistry],
        gateway: Callable[[], Gateway],
    ) -> None:
        self._settings, self._pool, self._phi = settings, pool, phi
        self._registry, self._gateway = registry, gateway

    def all(self) -> list[Callable[..., Any]]:
        return [self.prepare, self.train, self.evaluate, self.golden]

    @cached_property
    def _models(self) -> NoteModels:
        return NoteModels(base_path(self._settings), self._phi, self._registry())

    @cached_property
    def _embed(self) -> Any:
        from careflow.kb.embed import get_embedder

        return get_embedder().matrix

    @activity.defn(name="model.prepare")
    async def prepare(self, req: PrepareRequest) -> Prepared:
        """Export -> de-identified, filtered, deduplicated, split examples, encrypted in the PHI store."""
        from careflow.finetune.export import export

        progress: dict[str, Any] = {"phase": "preparing"}

        def run() -> Prepared:
            notes = export(req.data.export_seed, req.data.patients, req.data.canaries)
            examples, report = prep.prepare(notes, self._embed)
            stored = self._phi.put("finetune-data", prep.to_jsonl(examples))
            return Prepared(
                examples_ref=stored.ref, data_hash=report.data_hash, counts=dict(report.splits),
                report=report.to_dict(),
            )  # fmt: skip

        return await beating(run, progress)

    @activity.defn(name="model.train")
    async def train(self, req: TrainRequest) -> Trained:
        """LoRA fine-tuning.  Every checkpoint goes to the PHI store and its reference into the heartbeat;
        a retry (a killed worker) reads the last one and continues from its step."""
        details = activity.info().heartbeat_details
        last: dict[str, Any] = dict(details[0]) if details else {}
        resume_ref: str | None = last.get("checkpoint")
        progress: dict[str, Any] = {
            "phase": "training",
            "step": last.get("step", 0),
            "checkpoint": resume_ref,
        }
        if resume_ref:
            log.info("training resumes", workflow_id=req.workflow_id, step=last.get("step"))
        cfg = train_config(req.train)

        def checkpoint(blob: bytes, step: int) -> None:
            progress.update(checkpoint=self._phi.put("finetune-checkpoint", blob).ref, step=step)

        def step(done: int, total: int, loss: float) -> None:
            progress.update(step=done, total=total, loss=loss)

        def run() -> Trained:
            examples = prep.from_jsonl(self._phi.read(req.examples_ref))
            train = [e for e in examples if e.split == "train"]
            resume = self._phi.read(resume_ref) if resume_ref else None
            base = self._models.base
            r = lm.finetune(base, train, cfg, resume=resume, on_step=step, on_checkpoint=checkpoint)
            adapter = self._phi.put("note-adapter", r.adapter)
            return Trained(
                adapter_ref=adapter.ref, base_model=str(base.name), steps=r.steps, loss=r.loss,
                seconds=r.seconds, epsilon=r.epsilon, delta=r.delta, privacy=r.privacy,
                resumed_from=int(last.get("step", 0)) if resume_ref else 0,
            )  # fmt: skip

        return await beating(run, progress)

    @activity.defn(name="model.evaluate")
    async def evaluate(self, req: EvaluateRequest) -> Evaluated:
        """Base vs candidate on the test split (ROUGE-L, SOAP format, subgroups), the memorization audit,
        and the blind pairs from the held-out notes, in an order only the workflow keeps."""
        from careflow.finetune.evaluate import evaluate

        progress: dict[str, Any] = {"phase": "evaluating"}

        def run() -> Evaluated:
            examples = prep.from_jsonl(self._phi.read(req.examples_ref))
            adapter = self._phi.read(req.adapter_ref)
            cand_model, cand_tok = self._models.with_adapter(adapter, train_config(req.train))
            memo: dict[str, str] = {}  # the candidate is not registered yet: NoteModels cannot keep it

            def cand_gen(prompts: Sequence[str]) -> list[str]:
                todo = [p for p in dict.fromkeys(prompts) if p not in memo]
                memo.update(zip(todo, lm.generate(cand_model, cand_tok, todo), strict=True))
                progress["generated"] = len(memo)
                return [memo[p] for p in prompts]

            def base_gen(prompts: Sequence[str]) -> list[str]:
                return self._models.generate(BASE, prompts)  # remembered per prompt by NoteModels

            train = [e for e in examples if e.split == "train"]
            test = [e for e in examples if e.split == "test"]
            ev = evaluate(base_gen, cand_gen, test, train)
            held = [e for e in examples if e.split != "train"][: req.review_pairs]
            prompts = [e.prompt for e in held]
            order = blind.hidden_order(len(held))
            shown = blind.pairs(prompts, base_gen(prompts), cand_gen(prompts), order)
            pairs_ref = self._phi.put("blind-review", blind.to_json(shown)).ref
            scores = {
                "rouge_l_base": round(ev.base_rouge_l, 4), "rouge_l": round(ev.candidate_rouge_l, 4),
                "soap_format_base": round(ev.base_format, 4), "soap_format": round(ev.candidate_format, 4),
                "canaries_tested": ev.canaries_tested, "canaries_reproduced": len(ev.memorized),
            }  # fmt: skip
            from dataclasses import asdict

            return Evaluated(
                scores=scores, failures=ev.failures(), flagged_subgroups=ev.flagged, evaluation=asdict(ev),
                pairs_ref=pairs_ref, candidate_is_a=order,
            )  # fmt: skip

        return await beating(run, progress)

    @activity.defn(name="model.golden")
    async def golden(self, req: GoldenRequest) -> GoldenResult:
        """Score a version on the feature's golden queries against its champion's baseline; the run is
        recorded once per key.  The note model: the version asked for, else the candidate, else the
        champion (scored first if it never was).  A gateway feature: the model that serves it now, and
        its champion is the version that last passed."""
        progress: dict[str, Any] = {"phase": "golden"}
        family = req.feature.split(".", 1)[0]  # `note_draft.<tenant>` shares its family's golden set
        if family == NOTE_DRAFT:
            d = await deployment.current(self._pool, req.feature)
            champion = d.champion or BASE
            version = req.version or d.candidate or champion
            cases = await beating(lambda: _note_draft_golden(self._embed), progress)

            async def outputs(v: str, key: str) -> list[str]:
                return await beating(lambda: self._models.generate(v, [c.prompt for c in cases]), progress)

        elif family in golden_sets.FEATURES:
            gateway = self._gateway()
            target = gateway.serving(family, PIPELINES_TEAM)
            version = f"{target.provider}/{target.model}"
            if req.version not in (None, version):
                raise ApplicationError(
                    f"{req.feature} is scored as it serves ({version}), not as {req.version}",
                    type="NoGoldenSet", non_retryable=True,
                )  # fmt: skip
            champion = await runs.last_passed(self._pool, req.feature) or version
            task_cases = golden_sets.load(family)
            cases = [
                golden.GoldenCase(c.case_id, c.task_input.model_dump_json(), c.expected) for c in task_cases
            ]

            async def outputs(v: str, key: str) -> list[str]:
                return await beating(
                    golden_sets.answers(gateway, target, task_cases, key, progress), progress
                )

        else:
            raise ApplicationError(
                f"no golden set for feature {req.feature!r}", type="NoGoldenSet", non_retryable=True
            )

        async def scored(v: str, base: float | None, key: str, trigger: str) -> golden.GoldenScore:
            s = golden.score(req.feature, v, cases, await outputs(v, key), self._embed, base)
            return await runs.record(self._pool, key, trigger, s)

        baseline = await runs.baseline(self._pool, req.feature, champion)
        if baseline is None and version != champion:
            baseline = (await scored(champion, None, f"{req.key}/baseline", "baseline")).score
        s = await scored(version, baseline, req.key, req.trigger)
        if s.regressed:
            log.warning("golden regression", feature=req.feature, version=version, drop=round(s.drop, 3))
        return GoldenResult(
            feature=s.feature, version=s.version, n=s.n, score=round(s.score, 4), baseline=s.baseline,
            drop=round(s.drop, 4), regressed=s.regressed, worst=list(s.worst),
        )  # fmt: skip


class PromotionActivities:
    """careflow-main: the registry (MLflow, synchronous: in threads), the deployment row, alerts."""

    def __init__(
        self, pool: asyncpg.Pool, notifier: Notifier, registry: Callable[[], NoteModelRegistry]
    ) -> None:
        self._pool, self._notifier, self._registry = pool, notifier, registry

    def all(self) -> list[Callable[..., Any]]:
        return [self.register, self.reject, self.tag, self.deploy, self.restore, self.flag_rate, self.alert]

    async def _call(self, work: Callable[[NoteModelRegistry], T]) -> T:
        def run() -> T:
            try:
                return work(self._registry())
            except RegistryRefused as exc:
                raise ApplicationError(str(exc), type="RegistryRefused", non_retryable=True) from None

        return await asyncio.to_thread(run)

    @activity.defn(name="model.register")
    async def register(self, req: RegisterRequest) -> VersionRef:
        t, e, p = req.trained, req.evaluated, req.prepared
        tags = {
            "feature": req.feature, "candidate": req.candidate, "workflow_id": req.workflow_id,
            "training_date": datetime.now(UTC).date().isoformat(), "data_hash": p.data_hash,
            "adapter_ref": t.adapter_ref, "base_model": t.base_model, "intended_use": req.intended_use,
            "privacy": t.privacy, "epsilon": "" if t.epsilon is None else f"{t.epsilon:.3f}",
            "delta": "" if t.delta is None else f"{t.delta:.2e}", "deid_method": prep.DEID_METHOD,
            "lora_rank": str(req.train.rank), "lora_alpha": str(req.train.alpha),
            "examples": ",".join(f"{k}={v}" for k, v in sorted(p.counts.items())),
        }  # fmt: skip
        tags["rouge_l"] = f"{e.scores.get('rouge_l', 0.0):.3f}"
        metrics = {**e.scores, "steps": float(t.steps), "loss": t.loss, "train_seconds": t.seconds}
        if t.epsilon is not None:
            metrics["epsilon"] = t.epsilon
        key = step_key(req.workflow_id, "register")
        v = await self._call(lambda r: r.register(key, tags, metrics, e.evaluation))
        return VersionRef(version=v.version)

    @activity.defn(name="model.reject")
    async def reject(self, req: RejectRequest) -> None:
        await self._call(lambda r: r.reject(req.version, req.reason))

    @activity.defn(name="model.tag")
    async def tag(self, req: TagRequest) -> None:
        """Approvals, the 510(k) clearance (checked), the deployment stage: tags on the version."""
        number = req.tags.get("fda_clearance")
        if number is not None:
            by = req.tags.get("fda_clearance_by", "")
            await self._call(lambda r: r.attach_clearance(req.version, number, by))
        rest = {k: v for k, v in req.tags.items() if not k.startswith("fda_clearance")}
        if rest:
            await self._call(lambda r: r.tag(req.version, **rest))

    @activity.defn(name="model.deploy")
    async def deploy(self, req: DeployRequest) -> DeploymentState:
        """One change of the feature's routing (the row the gateway reads), once per workflow step;
        promotion also moves the registry's champion alias (refused: PromotionBlocked)."""
        key, actor = step_key(req.workflow_id, f"deploy-{req.action.value}"), req.workflow_id
        if req.action is DeploymentAction.PROMOTE:
            try:
                await self._call(lambda r: r.promote(req.version))
            except ApplicationError as exc:
                raise ApplicationError(exc.message, type="PromotionBlocked", non_retryable=True) from None
            d = await deployment.promote(self._pool, req.feature, req.version, actor, key)
        elif req.action is DeploymentAction.ROLLBACK:
            d = await deployment.rollback(self._pool, req.feature, req.back_to, actor, req.reason, key)
        else:
            to = Stage(req.action.value)
            d = await deployment.stage(self._pool, req.feature, req.version, to, actor, key, req.percent)
            await self._call(lambda r: r.stage(req.version, to.value))
        return DeploymentState(
            champion=d.champion, candidate=d.candidate, stage=d.stage.value if d.stage else None,
            percent=d.percent,
        )  # fmt: skip

    @activity.defn(name="model.restore")
    async def restore(self, req: RestoreRequest) -> RestoreResult:
        """A promoted champion taken back one step: the champion before it answers again (the routing
        row first: the next request sees it), then the registry's aliases and the version rejected.
        Refused (RollbackRefused) when the version never was promoted, no longer serves, or a candidate
        is in flight (its saga's own rollback comes first)."""
        key = step_key(req.workflow_id, "restore")
        promoted, back_to = await deployment.champion_before(self._pool, req.feature, req.version)
        if not promoted:
            raise ApplicationError(
                f"version {req.version} was never promoted for {req.feature}", type="RollbackRefused",
                non_retryable=True,
            )  # fmt: skip
        because = f"rolled back after promotion by {req.by}: {req.reason}"
        try:
            await deployment.restore(self._pool, req.feature, req.version, back_to, req.by, because, key)
        except deployment.DeploymentRefused as exc:
            raise ApplicationError(str(exc), type="RollbackRefused", non_retryable=True) from None
        await self._call(lambda r: r.demote(req.version, back_to, because))
        return RestoreResult(feature=req.feature, version=req.version, outcome="rolled-back", back_to=back_to)

    @activity.defn(name="model.flag_rate")
    async def flag_rate(self, req: FlagRateRequest) -> FlagRateResult:
        f = await feedback.flag_rate(self._pool, req.feature, served_model(req.version), req.since)
        return FlagRateResult(
            responses=f.responses, flags=f.flags, rate=round(f.rate, 4), breached=f.breached
        )

    @activity.defn(name="model.alert")
    async def alert(self, req: AlertRequest) -> None:
        """Operations hear of every failed gate and rollback (ids and the reason: no PHI)."""
        await self._notifier.send(
            dedup_key=step_key(req.workflow_id, req.step),
            kind="model-gate",
            recipient_id="ml-operations",
            workflow_id=req.workflow_id,
            body=req.model_dump(include={"feature", "version", "outcome", "reason"}),
        )
