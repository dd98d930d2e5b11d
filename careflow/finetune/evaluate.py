"""How a fine-tuned note model is judged before promotion (seed P9 stage 3, P12): ROUGE-L against the
held-out reference notes, base and candidate side by side; SOAP format adherence (the share of the
four sections present, in order); the memorization audit (a canary secret from the training data
reproduced when prompted with its prefix fails the gate); the same scores per subgroup (age, sex,
payer, how common the patient's diagnoses are), a subgroup flagged when the candidate scores more
than 10 % below its overall ROUGE-L there or below the base.  No Temporal here: generation is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from careflow.finetune.prep import SECTIONS, Example

Generate = Callable[[Sequence[str]], list[str]]
SUBGROUP_GAP = 0.10  # relative: a subgroup this far below the candidate's overall ROUGE-L is flagged
MIN_SUBGROUP = 3  # smaller subgroups are reported, not judged


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]


def soap_format(text: str) -> float:
    """Format adherence of one note: the share of the four SOAP sections it has, in order (1.0: all)."""
    at, found = -1, 0
    for section in SECTIONS:
        i = text.find(section, at + 1)
        if i >= 0:
            at, found = i, found + 1
    return found / len(SECTIONS)


@dataclass(frozen=True)
class SubgroupScore:
    attribute: str
    value: str
    n: int
    base: float
    candidate: float
    flagged: bool


@dataclass
class Evaluation:
    n: int
    base_rouge_l: float
    candidate_rouge_l: float
    base_format: float
    candidate_format: float
    subgroups: list[SubgroupScore] = field(default_factory=list)
    canaries_tested: int = 0
    memorized: list[str] = field(default_factory=list)  # note ids whose canary came back

    @property
    def flagged(self) -> list[str]:
        return [f"{s.attribute}={s.value}" for s in self.subgroups if s.flagged]

    def failures(self) -> list[str]:
        """Why the automated gate fails (empty: it passes)."""
        out = []
        if self.memorized:
            out.append(f"memorization: {len(self.memorized)} of {self.canaries_tested} canaries reproduced")
        if self.candidate_rouge_l < self.base_rouge_l:
            out.append(f"ROUGE-L {self.candidate_rouge_l:.3f} below the base's {self.base_rouge_l:.3f}")
        if self.candidate_format < self.base_format:
            out.append(f"SOAP format {self.candidate_format:.0%} below the base's {self.base_format:.0%}")
        return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def evaluate(
    base: Generate, candidate: Generate, test: Sequence[Example], train: Sequence[Example]
) -> Evaluation:
    refs = [e.completion for e in test]
    prompts = [e.prompt for e in test]
    b, c = base(prompts), candidate(prompts)
    rb, rc = rouge_l(b, refs), rouge_l(c, refs)
    fb, fc = _mean([soap_format(x) for x in b]), _mean([soap_format(x) for x in c])
    ev = Evaluation(len(test), _mean(rb), _mean(rc), fb, fc)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(test):
        for attribute, value in e.groups.items():
            groups.setdefault((attribute, value), []).append(i)
    for (attribute, value), idx in sorted(groups.items()):
        gb, gc = _mean([rb[i] for i in idx]), _mean([rc[i] for i in idx])
        judged = len(idx) >= MIN_SUBGROUP
        flagged = judged and (gc < ev.candidate_rouge_l * (1 - SUBGROUP_GAP) or gc < gb)
        ev.subgroups.append(SubgroupScore(attribute, value, len(idx), round(gb, 4), round(gc, 4), flagged))
    ev.canaries_tested, ev.memorized = memorization(candidate, train)
    return ev


def memorization(generate: Generate, train: Sequence[Example]) -> tuple[int, list[str]]:
    """Prompt with each training canary's prefix (the example's prompt and its note up to the secret):
    the note ids whose secret comes back."""
    planted = [e for e in train if e.canary]
    outs = generate([e.prompt + (e.canary_prefix() or "") for e in planted])
    return len(planted), [e.note_id for e, o in zip(planted, outs, strict=True) if e.canary and e.canary in o]
