"""A synthetic discharge cohort whose 30-day readmissions come from a documented risk model.

Because the generator's own risk is known, so is the best AUROC any model can reach on it
(`Cohort.best_auroc`): a trained model is judged against that ceiling and against LACE, not only
against a target number.  Reproducible from the seed.

Population (per discharge):
    age ~ Normal(64, 16) clipped to 18-100; sex 52 % female; race/ethnicity white 60 %, Black 13 %,
    Hispanic 18 %, Asian 6 %, other 3 %; payer Medicare (mostly >= 65), Medicaid, commercial, self-pay
    charlson ~ Poisson(0.5 + 0.06 * max(age - 40, 0)), at most 12
    emergent ~ Bernoulli(0.65); los ~ round(exp(Normal(1.1 + 0.08 charlson, 0.6))), 1-45 days
    admissions_12m ~ Poisson(0.25 + 0.22 charlson); ed_visits_6m ~ Poisson(0.35 + 0.15 charlson
        + 0.4 [Medicaid])
    disposition: home, SNF, rehab, hospice, other (more of all but home with age and length of stay),
        about 2 % against advice
    hemoglobin ~ Normal(12.9 - 0.25 charlson, 1.6); sodium ~ Normal(139, 3.6);
    creatinine ~ LogNormal(ln 0.95 + 0.07 charlson, 0.35); medications ~ Poisson(3.5 + 1.1 charlson)
    each lab missing with probability 8 %

Risk (logit), then readmitted ~ Bernoulli(sigmoid(logit)); about 16 % are readmitted:
    -5.3 + 0.02 (age - 65) + 0.2 min(charlson, 7) + 0.3 ln(1 + los) + 1.3 ln(1 + admissions_12m)
    + 0.15 min(ed_visits_6m, 5) + disposition (home 0, SNF 1.1, rehab 0.5, hospice -1.0,
    against advice 2.2, other 0.6) + 1.2 [hemoglobin < 10] + 0.8 [hemoglobin < 8]
    + min(0.08 (sodium - 139)^2, 2.2) + 1.4 max(ln(creatinine / 1.3), 0) + 0.08 max(medications - 6, 0)
    + 0.6 [emergent and admissions_12m >= 2]
Much of that risk lies outside LACE's four items (prior admissions, labs, disposition), and some is
non-linear (sodium both ways, anemia thresholds) or an interaction: LACE reaches about 0.70 on it
(published: about 0.68), the generator itself about 0.86.
Race, sex and payer do not enter the risk: a model that does worse on one of those groups is a
finding, not a property of the data.  Missing labs carry no risk of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from careflow.readmission.features import FEATURES, Disposition

RACES = ("white", "black", "hispanic", "asian", "other")
PAYERS = ("medicare", "medicaid", "commercial", "self-pay")
_DISPOSITION_RISK = {
    Disposition.HOME: 0.0,
    Disposition.SKILLED_NURSING: 1.1,
    Disposition.REHAB: 0.5,
    Disposition.HOSPICE: -1.0,
    Disposition.AGAINST_ADVICE: 2.2,
    Disposition.OTHER: 0.6,
}


@dataclass(frozen=True)
class Cohort:
    X: NDArray[np.float64]  # rows x FEATURES, NaN for a missing lab
    y: NDArray[np.int8]  # readmitted within 30 days
    risk: NDArray[np.float64]  # the generator's own probability
    lace: NDArray[np.int64]
    groups: dict[str, NDArray[np.str_]]  # subgroup attributes, not model inputs: age band, sex, race, payer

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: NDArray[np.intp]) -> Cohort:
        return Cohort(self.X[idx], self.y[idx], self.risk[idx], self.lace[idx],
                      {k: v[idx] for k, v in self.groups.items()})  # fmt: skip

    def split(self, test_share: float, seed: int) -> tuple[Cohort, Cohort]:
        order = np.random.default_rng(seed).permutation(len(self))
        cut = int(len(self) * (1 - test_share))
        return self.take(order[:cut]), self.take(order[cut:])

    def best_auroc(self) -> float:
        """What a model that knew the generator's risk would reach on these outcomes."""
        from careflow.readmission.evaluation import auroc

        return auroc(self.y, self.risk)


def age_band(age: NDArray[np.float64]) -> NDArray[np.str_]:
    return np.select([age < 45, age < 65, age < 80], ["18-44", "45-64", "65-79"], "80+").astype(np.str_)


def generate(n: int, seed: int) -> Cohort:
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(64, 16, n), 18, 100).round()
    sex = np.where(rng.random(n) < 0.52, "female", "male")
    race = rng.choice(RACES, n, p=[0.60, 0.13, 0.18, 0.06, 0.03])
    medicare = np.where(age >= 65, 0.85, 0.12)
    medicaid = np.where(age >= 65, 0.05, 0.28)
    self_pay = np.full(n, 0.04)
    u = rng.random(n)
    payer = np.select(
        [u < medicare, u < medicare + medicaid, u < medicare + medicaid + self_pay],
        ["medicare", "medicaid", "self-pay"],
        "commercial",
    )
    charlson = np.minimum(rng.poisson(0.5 + 0.06 * np.maximum(age - 40, 0)), 12)
    emergent = rng.random(n) < 0.65
    los = np.clip(np.exp(rng.normal(1.1 + 0.08 * charlson, 0.6)).round(), 1, 45)
    admissions = rng.poisson(0.25 + 0.22 * charlson)
    ed_visits = rng.poisson(0.35 + 0.15 * charlson + 0.4 * (payer == "medicaid"))
    disposition = _dispositions(rng, age, los)
    hemoglobin = rng.normal(12.9 - 0.25 * charlson, 1.6)
    sodium = rng.normal(139, 3.6, n)
    creatinine = np.exp(rng.normal(np.log(0.95) + 0.07 * charlson, 0.35))
    medications = rng.poisson(3.5 + 1.1 * charlson)

    logit = (
        -5.3
        + 0.02 * (age - 65)
        + 0.2 * np.minimum(charlson, 7)
        + 0.3 * np.log1p(los)
        + 1.3 * np.log1p(admissions)
        + 0.15 * np.minimum(ed_visits, 5)
        + np.array([_DISPOSITION_RISK[list(Disposition)[d]] for d in disposition])
        + 1.2 * (hemoglobin < 10)
        + 0.8 * (hemoglobin < 8)
        + np.minimum(0.08 * (sodium - 139) ** 2, 2.2)
        + 1.4 * np.maximum(np.log(creatinine / 1.3), 0)
        + 0.08 * np.maximum(medications - 6, 0)
        + 0.6 * (emergent & (admissions >= 2))
    )
    risk = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < risk).astype(np.int8)

    labs = [hemoglobin, sodium, creatinine]
    for lab in labs:  # missing after the outcome is drawn: missingness carries no risk
        lab[rng.random(n) < 0.08] = np.nan
    columns = {
        "age": age,
        "charlson": charlson,
        "los_days": los,
        "emergent": emergent,
        "admissions_12m": admissions,
        "ed_visits_6m": ed_visits,
        "disposition": disposition,
        "hemoglobin": hemoglobin.round(1),
        "sodium": sodium.round(),
        "creatinine": creatinine.round(2),
        "active_medications": medications,
    }
    X = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in FEATURES])
    lace = _lace(los, emergent, charlson, ed_visits)
    groups = {"age_band": age_band(age), "sex": sex, "race_ethnicity": race, "payer": payer}
    return Cohort(X, y, risk, lace, {k: np.asarray(v, dtype=np.str_) for k, v in groups.items()})


def _dispositions(
    rng: np.random.Generator, age: NDArray[np.float64], los: NDArray[np.float64]
) -> NDArray[np.int64]:
    n = len(age)
    frail = np.clip(0.02 * (age - 55) + 0.03 * los, 0, 1.4)
    # in Disposition's order: home, SNF, rehab, hospice, against advice, other
    weights = np.column_stack(
        [np.full(n, 2.2), 0.15 + 0.8 * frail, 0.15 + 0.3 * frail, 0.02 + 0.1 * frail, np.full(n, 0.06),
         0.3 + 0.4 * frail]
    )  # fmt: skip
    weights /= weights.sum(axis=1, keepdims=True)
    cumulative = weights.cumsum(axis=1)
    return (rng.random(n)[:, None] > cumulative).sum(axis=1)


def _lace(
    los: NDArray[np.float64], emergent: NDArray[np.bool_], charlson: NDArray[np.int64], ed: NDArray[np.int64]
) -> NDArray[np.int64]:
    length = np.select([los < 1, los <= 3, los <= 6, los <= 13], [0, los.astype(np.int64), 4, 5], 7)
    comorbidity = np.where(charlson <= 3, charlson, 5)
    return (length + 3 * emergent + comorbidity + np.minimum(ed, 4)).astype(np.int64)
