"""Champion against its shadow challenger on the same discharges (`careflow risk compare`).

Every discharge is scored by both (the challenger's score is logged, never on the worklist).  On the
latest discharges this reports how much the two agree (same risk tier, rank correlation, mean absolute
difference), and, for the discharges whose 30-day outcome is known (`readmitted`, settled by the
nightly run 30 days after discharge), each model's AUROC, Brier score and calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from careflow.models.readmission import ModelAlias
from careflow.readmission.store import ScoreRow

CALIBRATION_BINS = 5
MIN_FOR_AUROC = 20  # and both outcomes present


@dataclass(frozen=True)
class Side:
    version: str
    mean_probability: float
    high_share: float  # share scored high tier
    auroc: float | None  # None: too few known outcomes
    brier: float | None
    calibration: list[tuple[float, float, int]]  # (mean predicted, observed, n) by quantile bin


@dataclass(frozen=True)
class Comparison:
    discharges: int  # scored by both versions
    with_outcome: int
    readmitted: int
    champion: Side
    challenger: Side
    tier_agreement: float  # share of discharges both put in the same tier
    high_agreement: float | None  # of those either puts high, share both put high
    rank_correlation: float | None  # Spearman
    mean_abs_difference: float


def pairs(rows: Sequence[ScoreRow]) -> dict[tuple[str, str], list[tuple[ScoreRow, ScoreRow]]]:
    """(champion row, challenger row) per discharge scored by both, grouped by (champion version,
    challenger version); an encounter scored again keeps its latest pair."""
    latest: dict[tuple[str, str], ScoreRow] = {}
    for r in rows:
        k = (r.encounter_id, r.role)
        if k not in latest or r.scored_at > latest[k].scored_at:
            latest[k] = r
    out: dict[tuple[str, str], list[tuple[ScoreRow, ScoreRow]]] = {}
    for (encounter, role), champ in latest.items():
        if role != ModelAlias.CHAMPION.value:
            continue
        shadow = latest.get((encounter, ModelAlias.CHALLENGER.value))
        if shadow is not None and shadow.workflow_id == champ.workflow_id:
            out.setdefault((champ.model_version, shadow.model_version), []).append((champ, shadow))
    return out


def _side(version: str, p: np.ndarray, tiers: list[str], known: list[int], y: np.ndarray) -> Side:
    """Agreement figures over every discharge; AUROC, Brier and calibration over those with outcomes."""
    from careflow.readmission import evaluation

    auroc = brier = None
    cal: list[tuple[float, float, int]] = []
    if known:
        pk, yk = p[known], y.astype(np.int64)
        brier = float(np.mean((pk - yk) ** 2))
        if len(yk) >= MIN_FOR_AUROC and 0 < yk.sum() < len(yk):
            auroc = evaluation.auroc(yk, pk)
        cal = evaluation.calibration(yk, pk, bins=min(CALIBRATION_BINS, len(yk)))
    return Side(
        version=version,
        mean_probability=float(p.mean()),
        high_share=sum(t == "high" for t in tiers) / len(tiers),
        auroc=auroc,
        brier=brier,
        calibration=cal,
    )


def compare(versions: tuple[str, str], scored: Sequence[tuple[ScoreRow, ScoreRow]]) -> Comparison:
    if not scored:
        raise ValueError("no discharge was scored by both versions")
    champ = np.array([c.probability for c, _ in scored])
    shadow = np.array([s.probability for _, s in scored])
    c_tiers, s_tiers = [c.tier for c, _ in scored], [s.tier for _, s in scored]
    known = [i for i, (c, _) in enumerate(scored) if c.readmitted is not None]
    y = np.array([1.0 if scored[i][0].readmitted else 0.0 for i in known])
    either_high = [i for i in range(len(scored)) if "high" in (c_tiers[i], s_tiers[i])]
    rho = None
    if len(scored) >= 3 and np.ptp(champ) > 0 and np.ptp(shadow) > 0:
        from scipy.stats import spearmanr

        rho = float(spearmanr(champ, shadow).statistic)
    return Comparison(
        discharges=len(scored),
        with_outcome=len(known),
        readmitted=int(y.sum()),
        champion=_side(versions[0], champ, c_tiers, known, y),
        challenger=_side(versions[1], shadow, s_tiers, known, y),
        tier_agreement=sum(a == b for a, b in zip(c_tiers, s_tiers, strict=True)) / len(scored),
        high_agreement=(
            sum(c_tiers[i] == s_tiers[i] == "high" for i in either_high) / len(either_high)
            if either_high
            else None
        ),
        rank_correlation=rho,
        mean_abs_difference=float(np.abs(champ - shadow).mean()),
    )
