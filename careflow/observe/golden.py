"""Layer 3 of AI observability (seed P5): golden-query evaluation.  Each AI feature has a golden set
(50-100 queries with expected outputs); a model version's outputs are scored by the cosine similarity
of their embeddings to the expected ones, and a mean more than 10 % below the feature's baseline (the
score of the version that last passed) is a regression: the deployment step fails and rolls back.

Layer 2's user signal is here too: the flag rate of a feature's responses over the last 30 minutes
(`POST /v1/feedback`); above 2 % with enough responses to mean something, the gate fails as well.
No Temporal here: embedding and generation are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from careflow.kb.embed import Embed

REGRESSION_DROP = 0.10  # relative to the baseline
FLAG_RATE_LIMIT = 0.02
FLAG_WINDOW = timedelta(minutes=30)
MIN_RESPONSES = 50  # fewer responses in the window: the flag rate is not judged


@dataclass(frozen=True)
class GoldenCase:
    case_id: str
    prompt: str
    expected: str


@dataclass(frozen=True)
class GoldenScore:
    feature: str
    version: str
    n: int
    score: float  # mean cosine similarity to the expected outputs
    baseline: float | None
    worst: tuple[tuple[str, float], ...]  # the lowest-scoring cases, for whoever looks into it

    @property
    def drop(self) -> float:
        """How far below the baseline, relative (0 when at or above it, or without one)."""
        if not self.baseline:
            return 0.0
        return max(0.0, (self.baseline - self.score) / self.baseline)

    @property
    def regressed(self) -> bool:
        return self.drop > REGRESSION_DROP


def score(
    feature: str, version: str, cases: Sequence[GoldenCase], outputs: Sequence[str], embed: Embed,
    baseline: float | None,
) -> GoldenScore:  # fmt: skip
    if len(cases) != len(outputs) or not cases:
        raise ValueError(f"{len(outputs)} outputs for {len(cases)} golden cases")
    got, want = embed(list(outputs)), embed([c.expected for c in cases])
    sims = np.sum(got * want, axis=1)
    order = np.argsort(sims)[:5]
    worst = tuple((cases[i].case_id, round(float(sims[i]), 4)) for i in order)
    return GoldenScore(feature, version, len(cases), float(np.mean(sims)), baseline, worst)


@dataclass(frozen=True)
class FlagRate:
    responses: int
    flags: int

    @property
    def rate(self) -> float:
        return self.flags / self.responses if self.responses else 0.0

    @property
    def breached(self) -> bool:
        return self.responses >= MIN_RESPONSES and self.rate > FLAG_RATE_LIMIT
