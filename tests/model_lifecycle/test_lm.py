"""The note model for real, at toy size (careflow/finetune/lm.py, evaluate.py): a base built here,
LoRA fine-tuning that resumes from a checkpoint to the same weights, DP-SGD that records the epsilon
it spent, and the memorization audit catching a canary an over-trained model gives back."""

from __future__ import annotations

import re
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest

from careflow.finetune import lm
from careflow.finetune.evaluate import evaluate, memorization, rouge_l, soap_format
from careflow.finetune.export import CANARY_PREFIX, export
from careflow.finetune.prep import Example, prompt_for

TINY = lm.BaseConfig(
    vocab_size=600, hidden=64, layers=1, heads=2, intermediate=128, max_tokens=512, steps=200
)
TRAIN = lm.TrainConfig(epochs=2, batch=4, rank=4, alpha=8, target_epsilon=None, checkpoint_every=3)


@cache
def examples() -> list[Example]:
    out = []
    for n in export(9, 6, canaries=1):
        if n.defect is None:
            out.append(Example(n.note_id, prompt_for(n), n.text, "train", n.canary))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [re.sub(r"\n?(SUBJECTIVE|OBJECTIVE|ASSESSMENT|PLAN): ", " ", e.completion) for e in examples()]
    return lm.build_base(texts, tmp_path_factory.mktemp("base"), TINY)


def test_the_base_is_built_here_and_loads_as_a_causal_lm(base: Path) -> None:
    model, tok = lm.load(base)
    assert model.config.num_hidden_layers == 1 and len(tok) <= 600
    assert tok.decode(tok("Lives at [ADDRESS].")["input_ids"]) == "Lives at [ADDRESS]."
    [out] = lm.generate(model, tok, [examples()[0].prompt], max_new_tokens=8)
    assert isinstance(out, str)


def test_a_run_resumed_from_a_checkpoint_ends_with_the_weights_of_an_uninterrupted_one(base: Path) -> None:
    saved: list[tuple[bytes, int]] = []
    whole = lm.finetune(base, examples(), TRAIN, on_checkpoint=lambda blob, step: saved.append((blob, step)))
    assert whole.steps == TRAIN.epochs * -(-len(examples()) // TRAIN.batch)
    assert [s for _, s in saved] == list(range(3, whole.steps, 3))
    blob, at = saved[0]
    seen: list[int] = []
    resumed = lm.finetune(base, examples(), TRAIN, resume=blob, on_step=lambda s, t, loss: seen.append(s))
    assert seen == list(range(at + 1, whole.steps + 1))
    assert resumed.losses == whole.losses and resumed.adapter == whole.adapter
    assert whole.epsilon is None and whole.privacy.startswith("none")


def test_dp_sgd_records_the_epsilon_it_spent(base: Path) -> None:
    result = lm.finetune(base, examples(), replace(TRAIN, target_epsilon=8.0))
    assert result.epsilon is not None and 7.0 < result.epsilon <= 8.0
    assert result.delta is not None and result.delta < 1 / len(examples())
    assert result.privacy.startswith("dp-sgd (opacus")


def test_the_memorization_audit_catches_a_canary_an_overtrained_model_gives_back(base: Path) -> None:
    note = f"SUBJECTIVE: Knee pain. PLAN: Rest. {CANARY_PREFIX}: VI-4263-BB. Callback [PHONE]."
    planted = Example("note-canary", "Write a SOAP note.\n", note, "train", "VI-4263-BB")
    cfg = replace(TRAIN, epochs=40, lr=1e-2, rank=8, alpha=16)
    model, tok = lm.with_adapter(base, lm.finetune(base, [planted] * 4, cfg).adapter, cfg)
    tested, memorized = memorization(lambda ps: lm.generate(model, tok, ps, max_new_tokens=12), [planted])
    assert (tested, memorized) == (1, ["note-canary"])
    untrained, _ = lm.load(base)
    assert memorization(lambda ps: lm.generate(untrained, tok, ps, max_new_tokens=12), [planted]) == (1, [])


def test_evaluation_scores_base_and_candidate_side_by_side_and_names_the_gate_failures() -> None:
    test = [replace(e, split="test", groups={"sex": "female"}) for e in examples()[:3]]
    refs = [e.completion for e in test]
    ev = evaluate(lambda ps: ["no note"] * len(ps), lambda ps: refs[: len(ps)], test, [])
    assert ev.candidate_rouge_l == pytest.approx(1.0) and ev.base_rouge_l < 0.1
    assert (ev.base_format, ev.candidate_format) == (0.0, 1.0) and ev.failures() == []
    worse = evaluate(lambda ps: refs[: len(ps)], lambda ps: ["no note"] * len(ps), test, [])
    assert [f.split(" ")[0] for f in worse.failures()] == ["ROUGE-L", "SOAP"]
    assert worse.flagged == ["sex=female"]
    assert rouge_l(["a b c"], ["a b c"]) == [1.0]
    formats = [soap_format(x) for x in (refs[0], "PLAN: x", "PLAN: x SUBJECTIVE: y")]
    assert formats == [1.0, 0.25, 0.25]
