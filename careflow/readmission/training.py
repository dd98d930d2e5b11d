"""One training run of the readmission model, end to end and without Temporal: generate the cohort,
train on 80 %, judge on the held-out 20 % (overall and by subgroup), and derive what scoring needs:
the risk-tier cut points and a baseline score distribution for the nightly drift check.

`ReadmissionTrainingWorkflow` runs this in one heartbeating activity; `bench/risk_bench.py` prints it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from careflow.readmission import cohort, evaluation, model
from careflow.readmission.scoring import Cuts

TEST_SHARE = 0.2
# The care-coordination team works the top 30 % by score (high tier, narrative and Task); the next
# 30 % are moderate.
HIGH_SHARE = 0.30
MODERATE_SHARE = 0.30
BASELINE_SIZE = 5_000  # held-out scores kept with the version: the drift check's reference

# (phase, done, total): "cohort" 0/1 -> 1/1, "training" round/max rounds, "evaluation" 0/1 -> 1/1
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainingRun:
    trained: model.TrainedModel
    report: evaluation.Evaluation  # held out; sensitivity at the high-risk cut
    n: int
    seed: int
    readmitted_share: float
    data_hash: str  # of the training split, as trained on
    lace_auroc: float
    best_auroc: float  # the generator's own risk on the held-out split: the ceiling
    cuts: Cuts
    baseline: NDArray[np.float64]  # held-out scores (at most BASELINE_SIZE)
    rounds: int
    seconds: float  # training alone (not the cohort or the evaluation)

    @property
    def auroc(self) -> float:
        return self.report.overall.auroc or 0.0


def cuts_of(scores: NDArray[np.floating]) -> Cuts:
    """Tier cut points from a score distribution: the top HIGH_SHARE high, the next MODERATE_SHARE."""
    return Cuts(
        high=float(np.quantile(scores, 1 - HIGH_SHARE)),
        moderate=float(np.quantile(scores, 1 - HIGH_SHARE - MODERATE_SHARE)),
    )


def run(n: int, seed: int, progress: Progress | None = None) -> TrainingRun:
    say = progress or (lambda phase, done, total: None)
    say("cohort", 0, 1)
    data = cohort.generate(n, seed)
    fit, test = data.split(TEST_SHARE, seed)
    say("cohort", 1, 1)
    rounds: list[int] = []

    def on_round(i: int, _loss: float) -> None:
        rounds.append(i)
        say("training", i, model.ROUNDS)

    t0 = time.perf_counter()
    trained = model.train(fit.X, fit.y, seed=seed, on_round=on_round)
    seconds = time.perf_counter() - t0
    say("evaluation", 0, 1)
    p = trained.predict(test.X)
    cuts = cuts_of(p)
    report = evaluation.evaluate(test.y, p, test.groups, cuts.high)
    rng = np.random.default_rng(seed)
    baseline = p if len(p) <= BASELINE_SIZE else rng.choice(p, BASELINE_SIZE, replace=False)
    say("evaluation", 1, 1)
    return TrainingRun(
        trained=trained,
        report=report,
        n=n,
        seed=seed,
        readmitted_share=float(data.y.mean()),
        data_hash=model.data_hash(fit.X, fit.y),
        lace_auroc=evaluation.auroc(test.y, test.lace.astype(np.float64)),
        best_auroc=test.best_auroc(),
        cuts=cuts,
        baseline=np.sort(baseline),
        rounds=len(rounds),
        seconds=seconds,
    )
