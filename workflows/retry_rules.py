"""careflow's retry rules, in one place (ARCHITECTURE.md, "Retry rules").

Temporal owns retries.  Every activity call in a workflow takes its timeouts and retry policy from a
`Step` here, by name of what the step is for:

- **Transient failures** (connection refused, timeouts, HTTP 5xx and 429, Postgres unavailable) are
  retried with exponential backoff capped at `max_interval`, for as long as the step's clinical
  budget (`budget`, Temporal's schedule-to-close timeout) allows.  A dependency that is down for a
  minute costs a minute, never the workflow.
- **Business errors** (bad input, not found, refused) are non-retryable ApplicationErrors raised by
  the activities; the workflow turns each into a defined outcome with a reason.
- **A budget that runs out** sends the workflow down the step's fallback, which never depends on
  the system that failed: a partial context, a template draft, an alert built from the HL7 message
  itself.  Steps without a fallback have budgets of a day: an outage that long fails the workflow
  visibly (`careflow dev status`, `pa list`, `alerts list`) and resending its event starts it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from careflow.llm.types import Tier

DAY = timedelta(days=1)
A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class Step:
    attempt: timedelta  # one attempt (start-to-close)
    budget: timedelta  # all attempts together (schedule-to-close): the step's clinical clock
    max_interval: timedelta = timedelta(seconds=30)
    max_attempts: int = 0  # 0: as many as the budget allows
    non_retryable: tuple[str, ...] = ()
    heartbeat: timedelta | None = None  # long steps report progress; silence this long is a failure

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `workflow.execute_activity*`."""
        options: dict[str, Any] = {
            "start_to_close_timeout": self.attempt,
            "schedule_to_close_timeout": self.budget,
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=self.max_interval,
                maximum_attempts=self.max_attempts,
                non_retryable_error_types=list(self.non_retryable),
            ),
        }
        if self.heartbeat is not None:
            options["heartbeat_timeout"] = self.heartbeat
        return options


# -- AI drafts (llm.draft): the longest single attempt per tier; what another attempt cannot fix ----
LLM_ATTEMPT = {
    Tier.FRONTIER: timedelta(minutes=3),
    Tier.STANDARD: timedelta(seconds=90),
    Tier.EFFICIENT: timedelta(seconds=45),
}
LLM_NON_RETRYABLE = ("BadLlmInput", "PhiNotPermitted", "TierNotAllowed", "BudgetExceeded", "UnknownTeam",
                     "ProviderRejected")  # fmt: skip


def llm_draft(tier: Tier, attempts: int) -> Step:
    """`attempts` tries at one AI call of `tier`, then the caller's fallback (a template, the rules)."""
    return Step(
        LLM_ATTEMPT[tier], LLM_ATTEMPT[tier] * attempts + timedelta(minutes=2), timedelta(seconds=60),
        max_attempts=attempts, non_retryable=LLM_NON_RETRYABLE,
    )  # fmt: skip


# -- prior authorization: hours to decide (72 h expedited, 7 days standard) ------------------------
PA_INTAKE = Step(
    timedelta(seconds=60), DAY, timedelta(minutes=2), non_retryable=("OrderNotFound", "OrderNotCoded")
)
PA_CONTEXT_READ = Step(timedelta(seconds=60), timedelta(minutes=30), timedelta(minutes=1))  # then: partial
PA_EVIDENCE = Step(timedelta(seconds=60), timedelta(minutes=30), timedelta(minutes=1))  # then: KB unknown
PA_WRITE = Step(timedelta(seconds=20), DAY, timedelta(minutes=2))  # EHR records: short attempts, long budget
PA_STEP = Step(timedelta(seconds=60), DAY, timedelta(minutes=2))  # roster, review close, payer, follow-ups
PA_NOTIFY = Step(timedelta(seconds=60), DAY, timedelta(minutes=1))
PA_DRAFT = llm_draft(Tier.FRONTIER, attempts=2)  # then staff get a pre-filled template

# -- lab alert: a critical result reaches a clinician within 60 s ---------------------------------
LAB_CONTEXT = Step(
    timedelta(seconds=15), timedelta(seconds=40), timedelta(seconds=5)
)  # then: the message alone
LAB_ASSESS = Step(timedelta(seconds=30), timedelta(seconds=45), timedelta(seconds=5))  # then: the rules alone
LAB_NOTIFY = Step(timedelta(seconds=20), DAY, timedelta(seconds=15))  # the push: Postgres + webhook, no EHR
LAB_TASK = Step(timedelta(seconds=20), DAY, timedelta(minutes=1))  # the EHR Task: whenever the EHR is back
LAB_AUDIT = Step(timedelta(seconds=20), DAY, timedelta(seconds=15))

# -- readmission risk: a score within 2 h of discharge; nothing falls back but the narrative ------
RISK_READ = Step(timedelta(seconds=60), DAY, timedelta(minutes=2), non_retryable=("NotADischarge",))
RISK_SCORE = Step(timedelta(seconds=60), DAY, timedelta(minutes=1), non_retryable=("NoChampion",))
RISK_NARRATIVE = llm_draft(Tier.STANDARD, attempts=2)  # then: the model's factors without a narrative
RISK_WRITE = Step(timedelta(seconds=30), DAY, timedelta(minutes=2))
RISK_SWEEP = Step(
    timedelta(minutes=2), timedelta(hours=6), timedelta(minutes=1), non_retryable=("NoChampion",)
)
RISK_TRAIN = Step(
    timedelta(minutes=30), timedelta(hours=6), timedelta(minutes=1), heartbeat=timedelta(seconds=60)
)
RISK_PROMOTE = Step(
    timedelta(seconds=60), DAY, timedelta(minutes=1), non_retryable=("PromotionBlocked", "RegistryError")
)

# -- ambient notes: the note in the EHR within 60 min of the encounter's end -----------------------
AMBIENT_CONTEXT = Step(timedelta(seconds=60), DAY, timedelta(minutes=2), non_retryable=("NoPhysician",))
# Speech to text on careflow-stt: heartbeats its finished segments; a killed worker's retry resumes there.
AMBIENT_STT = Step(
    timedelta(minutes=30), timedelta(hours=6), timedelta(minutes=1), heartbeat=timedelta(seconds=30),
    non_retryable=("UnreadableAudio", "AudioTooShort", "NoSpeech"),
)  # fmt: skip
AMBIENT_DIARIZE = Step(timedelta(minutes=15), timedelta(hours=6), timedelta(minutes=1))
AMBIENT_PREPARE = Step(timedelta(seconds=60), DAY, timedelta(minutes=2), non_retryable=("PhiLeak",))
AMBIENT_DRAFT = llm_draft(Tier.FRONTIER, attempts=3)  # then: no-draft, operations told
AMBIENT_WRITE = Step(timedelta(seconds=30), DAY, timedelta(minutes=2))
AMBIENT_STEP = Step(timedelta(seconds=60), DAY, timedelta(minutes=1))  # review, codes, notices, audit


# -- the note model's promotion: model work on careflow-gpu heartbeats; a killed worker's retry resumes ------
MODEL_PREPARE = Step(timedelta(hours=1), DAY, timedelta(minutes=1), heartbeat=timedelta(seconds=60))
# 20 s: the SDK sends heartbeat details every 16 s (0.8 of it), so a killed worker loses at most that much
MODEL_TRAIN = Step(
    timedelta(hours=12), timedelta(days=2), timedelta(minutes=1), heartbeat=timedelta(seconds=20)
)
MODEL_EVALUATE = Step(timedelta(hours=2), DAY, timedelta(minutes=1), heartbeat=timedelta(seconds=60))
MODEL_GOLDEN = Step(
    timedelta(hours=1),
    DAY,
    timedelta(minutes=1),
    heartbeat=timedelta(seconds=60),
    non_retryable=("NoGoldenSet",),
)
MODEL_REGISTRY = Step(timedelta(seconds=60), DAY, timedelta(minutes=1), non_retryable=("RegistryRefused",))
MODEL_DEPLOY = Step(timedelta(seconds=60), DAY, timedelta(minutes=1), non_retryable=("PromotionBlocked",))
MODEL_RESTORE = Step(timedelta(seconds=60), DAY, timedelta(minutes=1), non_retryable=("RollbackRefused",))
MODEL_STEP = Step(timedelta(seconds=60), DAY, timedelta(minutes=1))  # flag rate, alerts


async def execute(
    step: Step, activity: Callable[[Any, A], Awaitable[R]], arg: A, *, task_queue: str | None = None
) -> R:
    """One activity call from a workflow, with the step's timeouts and retry policy (on `task_queue`
    when the activity runs on a queue of its own)."""
    options = step.options()
    if task_queue is not None:
        options["task_queue"] = task_queue
    return await workflow.execute_activity_method(activity, arg, **options)


# Disaster recovery (seed P20): each step is short and retried every few seconds (the RTO is minutes);
# the database-facing ones wait for the new primary as long as an outage could last.
DR_PROBE = Step(timedelta(seconds=30), timedelta(hours=1), timedelta(seconds=5))
DR_ACT = Step(timedelta(minutes=2), timedelta(hours=1), timedelta(seconds=5))  # fence, promote, switch
DR_VERIFY = Step(timedelta(minutes=1), timedelta(hours=1), timedelta(seconds=2))
DR_RECORD = Step(timedelta(minutes=1), DAY, timedelta(seconds=30))
DR_REBUILD = Step(
    timedelta(hours=2), DAY, timedelta(minutes=1), heartbeat=timedelta(minutes=2)
)  # a standby cloned anew: a base backup's time


def dr_inference_wait(wait: timedelta) -> Step:
    """Waiting for a rerouted inference server to answer again: one heartbeating attempt as long as the
    failover waits; a worker lost on the way starts it again."""
    return Step(wait, wait, timedelta(minutes=1), heartbeat=timedelta(minutes=1))


def dr_watch(watch: timedelta) -> Step:
    """The health monitor's watch: one heartbeating attempt as long as a run watches (a probe every few
    seconds); a worker lost on the way starts it again, its runs of failures from zero."""
    return Step(
        watch + timedelta(minutes=1), watch * 2, timedelta(seconds=10), heartbeat=timedelta(seconds=60)
    )


DR_PAGE = Step(timedelta(seconds=30), timedelta(minutes=10), timedelta(seconds=10))  # a failed failover
# Backups: copies of hours, heartbeating; a database or store that is down is waited for through the
# night; a full store is not (the run fails, its partial objects removed, the earlier backups intact).
DR_BACKUP_COPY = Step(
    timedelta(hours=6), timedelta(hours=12), timedelta(minutes=5),
    non_retryable=("BackupStoreFull",), heartbeat=timedelta(minutes=2),
)  # fmt: skip
DR_BACKUP_STEP = Step(timedelta(minutes=2), DAY, timedelta(minutes=2))  # catalog, manifest, retention
# A drill's restore: hours for a large cluster, heartbeating; a bad object or a failed recovery is its
# finding (not retried); a worker lost on the way starts it again.
DR_DRILL_RESTORE = Step(
    timedelta(hours=6), timedelta(hours=12), timedelta(minutes=5),
    non_retryable=("NoBackup", "ChecksumMismatch", "MissingObject", "RestoreFailed"),
    heartbeat=timedelta(minutes=2),
)  # fmt: skip


def failure_type(err: ActivityError) -> str | None:
    """The type of the ApplicationError an activity ended with (how a workflow names the outcome)."""
    return err.cause.type if isinstance(err.cause, ApplicationError) else None


def failure_message(err: ActivityError) -> str:
    """What the activity's ApplicationError said (the reason a named outcome carries)."""
    return str(err.cause.message if isinstance(err.cause, ApplicationError) else err)
