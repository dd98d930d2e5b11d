"""Scoring one discharge with one model version: probability, tier, top factors; and the nightly
drift check of a night's scores against the version's baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from careflow.models.readmission import Factor, ModelScore, RiskTier
from careflow.readmission.features import DischargeFeatures, row

if TYPE_CHECKING:  # LightGBM and scikit-learn take seconds to import: only where a model runs
    from careflow.readmission.model import TrainedModel


@dataclass(frozen=True)
class Cuts:
    """Score cut points of the risk tiers, from the held-out scores of the version's training run."""

    high: float  # the top 30 %: the care-coordination worklist
    moderate: float

    def tier(self, probability: float) -> RiskTier:
        if probability >= self.high:
            return RiskTier.HIGH
        return RiskTier.MODERATE if probability >= self.moderate else RiskTier.LOW


def score(trained: TrainedModel, cuts: Cuts, version: str, features: DischargeFeatures) -> ModelScore:
    x = np.asarray(row(features), dtype=np.float64)
    p = float(trained.predict(x.reshape(1, -1))[0])
    factors = [
        Factor(feature=f.feature, label=f.label, value=f.value, contribution=round(f.contribution, 4))
        for f in trained.top_factors(x, k=3)
    ]
    return ModelScore(version=version, probability=round(p, 4), tier=cuts.tier(p), factors=factors)


@dataclass(frozen=True)
class Drift:
    n: int
    psi: float | None
    threshold: float

    @property
    def shifted(self) -> bool:
        return self.psi is not None and self.psi > self.threshold


def drift(baseline: NDArray[np.floating], scores: NDArray[np.floating], seed: int = 0) -> Drift:
    """PSI of a night's scores against the training baseline; the threshold is PSI_ALERT for a large
    night and the bootstrapped null's 99th percentile for a small one (evaluation.psi_threshold)."""
    from careflow.readmission import evaluation

    if len(scores) == 0:
        return Drift(0, None, evaluation.PSI_ALERT)
    return Drift(
        len(scores),
        evaluation.psi(baseline, scores),
        evaluation.psi_threshold(baseline, len(scores), seed=seed),
    )
