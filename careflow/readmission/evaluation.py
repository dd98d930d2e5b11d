"""How a readmission model is judged (seed P12): discrimination, calibration and sensitivity at the
operating threshold, overall and in every subgroup; and drift of the score distribution (PSI).

A subgroup whose AUROC is `SUBGROUP_GAP` or more below the overall one is flagged: the model does
not go to champion until a reviewer approves it.  Subgroups smaller than `MIN_SUBGROUP` (or with
fewer than `MIN_EVENTS` readmissions) are reported but not judged: their AUROC is noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import brier_score_loss, roc_auc_score

SUBGROUP_GAP = 0.05
MIN_SUBGROUP = 200
MIN_EVENTS = 20
PSI_ALERT = 0.2


def auroc(y: NDArray[np.integer], score: NDArray[np.floating]) -> float:
    return float(roc_auc_score(y, score))


@dataclass(frozen=True)
class Metrics:
    n: int
    events: int
    auroc: float | None  # None when the group has a single outcome class
    brier: float
    sensitivity: float | None  # share of readmissions scored at or above the threshold


@dataclass(frozen=True)
class SubgroupRow:
    attribute: str
    value: str
    metrics: Metrics
    judged: bool  # large enough to judge
    flagged: bool  # judged and AUROC at least SUBGROUP_GAP below overall


@dataclass(frozen=True)
class Evaluation:
    overall: Metrics
    threshold: float
    calibration: list[tuple[float, float, int]]  # (mean predicted, observed rate, n) per decile
    subgroups: list[SubgroupRow] = field(default_factory=list)

    @property
    def flagged(self) -> list[SubgroupRow]:
        return [r for r in self.subgroups if r.flagged]


def metrics(y: NDArray[np.integer], p: NDArray[np.floating], threshold: float) -> Metrics:
    events = int(y.sum())
    both = 0 < events < len(y)
    return Metrics(
        n=len(y),
        events=events,
        auroc=auroc(y, p) if both else None,
        brier=float(brier_score_loss(y, p)) if len(y) else float("nan"),
        sensitivity=float((p[y == 1] >= threshold).mean()) if events else None,
    )


def calibration(
    y: NDArray[np.integer], p: NDArray[np.floating], bins: int = 10
) -> list[tuple[float, float, int]]:
    """Observed readmission rate against mean predicted risk, by decile of predicted risk."""
    order = np.argsort(p, kind="stable")
    return [
        (float(p[part].mean()), float(y[part].mean()), len(part))
        for part in np.array_split(order, bins)
        if len(part)
    ]


def evaluate(
    y: NDArray[np.integer],
    p: NDArray[np.floating],
    groups: dict[str, NDArray[np.str_]],
    threshold: float,
) -> Evaluation:
    overall = metrics(y, p, threshold)
    rows = []
    for attribute, values in groups.items():
        for value in sorted(set(values.tolist())):
            mask = values == value
            m = metrics(y[mask], p[mask], threshold)
            judged = m.auroc is not None and m.n >= MIN_SUBGROUP and m.events >= MIN_EVENTS
            flagged = bool(
                judged and overall.auroc is not None and m.auroc is not None
                and m.auroc <= overall.auroc - SUBGROUP_GAP
            )  # fmt: skip
            rows.append(SubgroupRow(attribute, value, m, judged, flagged))
    return Evaluation(overall, threshold, calibration(y, p), rows)


# -- drift ------------------------------------------------------------------------------------------
def psi(baseline: NDArray[np.floating], current: NDArray[np.floating], bins: int = 10) -> float:
    """Population stability index of `current` against `baseline`, on the baseline's deciles."""
    edges = np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(baseline, edges)[0] / len(baseline)
    actual = np.histogram(current, edges)[0] / max(len(current), 1)
    expected, actual = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(((actual - expected) * np.log(actual / expected)).sum())


def psi_threshold(
    baseline: NDArray[np.floating],
    n: int,
    bins: int = 10,
    quantile: float = 0.99,
    draws: int = 400,
    seed: int = 0,
) -> float:
    """The PSI above which a night of `n` scores has shifted.  At least PSI_ALERT; for small nights,
    the `quantile` of the PSI of `n` scores drawn from the baseline itself (at n=100 and 10 bins
    sampling noise alone often passes 0.1)."""
    rng = np.random.default_rng(seed)
    null = [psi(baseline, rng.choice(baseline, n, replace=True), bins) for _ in range(draws)]
    return max(PSI_ALERT, float(np.quantile(null, quantile)))
