"""The readmission model: LightGBM gradient boosting on `features.FEATURES`, and its explanations.

Each score's top factors are the model's own feature contributions (TreeSHAP, LightGBM's
`pred_contrib`): the log-odds each feature added to this patient's score.  Nothing else explains a
score: the LLM narrative may only cite these factors.

A model is stored as LightGBM's text format (`to_text` / `from_text`): the registry keeps that
text, its SHA-256 and the training data's hash, so a version is the same model wherever it loads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
from numpy.typing import NDArray

from careflow.readmission.features import CATEGORICAL, FEATURES, LABELS

# Tuned once on a 50,000-discharge cohort (bench/risk_bench.py); small trees, strong regularisation:
# risk models are judged on calibration as much as on ranking.
PARAMS: dict[str, object] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 80,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_cat_to_onehot": 8,
    "verbose": -1,
    "num_threads": 2,
    "deterministic": True,
    "force_row_wise": True,
}
ROUNDS = 400
EARLY_STOP = 30


@dataclass(frozen=True)
class Factor:
    feature: str
    label: str  # what it means to a care-coordination nurse
    value: float | None  # the patient's value (None: missing)
    contribution: float  # log-odds added to this patient's score (negative: lowers the risk)


@dataclass(frozen=True)
class TrainedModel:
    booster: lgb.Booster

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of readmission within 30 days."""
        return np.asarray(self.booster.predict(X), dtype=np.float64)

    def contributions(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """Per-feature log-odds contributions (rows x features; the bias column dropped)."""
        out = np.asarray(self.booster.predict(X, pred_contrib=True), dtype=np.float64)
        return out[:, : len(FEATURES)]

    def top_factors(self, x: NDArray[np.float64], k: int = 3) -> list[Factor]:
        """The k features that raised this patient's risk most (those that lowered it only when fewer
        than k raised it)."""
        contrib = self.contributions(x.reshape(1, -1))[0]
        order = sorted(range(len(FEATURES)), key=lambda i: -contrib[i])
        return [
            Factor(
                FEATURES[i], LABELS[FEATURES[i]], None if np.isnan(x[i]) else float(x[i]), float(contrib[i])
            )
            for i in order[:k]
        ]

    def to_text(self) -> str:
        return str(self.booster.model_to_string())

    @classmethod
    def from_text(cls, text: str) -> TrainedModel:
        return cls(lgb.Booster(model_str=text))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_text().encode()).hexdigest()


def data_hash(X: NDArray[np.float64], y: NDArray[np.integer]) -> str:
    """SHA-256 of the training data as trained on (NaNs included): the registry's `data_hash`."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int8).tobytes())
    return h.hexdigest()


def train(
    X: NDArray[np.float64],
    y: NDArray[np.integer],
    *,
    seed: int,
    valid_share: float = 0.1,
    on_round: Callable[[int, float], None] | None = None,
) -> TrainedModel:
    """Gradient boosting with early stopping on a held-back validation share (drawn by `seed`);
    `on_round(iteration, validation log-loss)` reports progress (the training activity heartbeats it)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    cut = int(len(y) * (1 - valid_share))
    fit, valid = order[:cut], order[cut:]
    categorical = [FEATURES.index(c) for c in CATEGORICAL]
    train_set = lgb.Dataset(X[fit], y[fit], feature_name=list(FEATURES), categorical_feature=categorical,
                            free_raw_data=False)  # fmt: skip
    valid_set = lgb.Dataset(X[valid], y[valid], reference=train_set)
    callbacks: list[Callable[..., None]] = [lgb.early_stopping(EARLY_STOP, verbose=False)]
    if on_round is not None:

        def report(env: lgb.callback.CallbackEnv) -> None:
            if env.evaluation_result_list:
                on_round(env.iteration + 1, float(env.evaluation_result_list[0][2]))

        callbacks.append(report)
    booster = lgb.train(
        {**PARAMS, "seed": seed, "metric": "binary_logloss"},
        train_set,
        num_boost_round=ROUNDS,
        valid_sets=[valid_set],
        callbacks=callbacks,
    )
    return TrainedModel(booster)
