"""The note model for real, at toy size (careflow/finetune/lm.py, evaluate.py): a base built here,
LoRA fine-tuning that resumes from a checkpoint to the same weights, DP-SGD that records the epsilon
it spent, and the memorization audit catching a canary an over-trained model gives back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from careflow.finetune import lm
from careflow.finetune.evaluate import evaluate, memorization, rouge_l, soap_format
from careflow.finetune.export import CANARY_PREFIX
from careflow.finetune.prep import Example
from tests.support.note_model import TRAIN, examples


def test_the_base_is_built_here_and_loads_as_a_causal_lm(note_base: Path) -> None:
    model, tok = lm.load(note_base)
    assert model.config.num_hidden_layers == 1 and len(tok) <= 600
    assert tok.decode(tok("Lives at [ADDRESS].")["input_ids"]) == "Lives at [ADDRESS]."
    [out] = lm.generate(model, tok, [examples()[0].prompt], max_new_tokens=8)
    assert isinstance(out, str)


def test_a_run_resumed_from_a_checkpoint_ends_with_the_weights_of_an_uninterrupted_one(
    note_base: Path,
) -> None:
    saved: list[tuple[bytes, int]] = []
    whole = lm.finetune(
        note_base, examples(), TRAIN, on_checkpoint=lambda blob, step: saved.append((blob, step))
    )
    assert whole.steps == TRAIN.epochs * -(-len(examples()) // TRAIN.batch)
    assert [s for _, s in saved] == list(range(3, whole.steps, 3))
    blob, at = saved[0]
    seen: list[int] = []
    resumed = lm.finetune(
        note_base, examples(), TRAIN, resume=blob, on_step=lambda s, t, loss: seen.append(s)
    )
    assert seen == list(range(at + 1, whole.steps + 1))
    assert resumed.losses == whole.losses and resumed.adapter == whole.adapter
    assert whole.epsilon is None and whole.privacy.startswith("none")


def test_dp_sgd_records_the_epsilon_it_spent(note_base: Path) -> None:
    result = lm.finetune(note_base, examples(), replace(TRAIN, target_epsilon=8.0))
    assert result.epsilon is not None and 7.0 < result.epsilon <= 8.0
    assert result.delta is not None and result.delta < 1 / len(examples())
    assert result.privacy.startswith("dp-sgd (opacus")


def test_the_memorization_audit_catches_a_canary_an_overtrained_model_gives_back(note_base: Path) -> None:
    note = f"SUBJECTIVE: Knee pain. PLAN: Rest. {CANARY_PREFIX}: VI-4263-BB. Callback [PHONE]."
    planted = Example("note-canary", "Write a SOAP note.\n", note, "train", "VI-4263-BB")
    cfg = replace(TRAIN, epochs=60, lr=2e-2, rank=8, alpha=16)
    model, tok = lm.with_adapter(note_base, lm.finetune(note_base, [planted] * 4, cfg).adapter, cfg)
    tested, memorized = memorization(lambda ps: lm.generate(model, tok, ps, max_new_tokens=12), [planted])
    assert (tested, memorized) == (1, ["note-canary"])
    untrained, _ = lm.load(note_base)
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


def test_a_served_version_decodes_a_prompt_once(note_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from careflow.finetune import serving

    decoded: list[str] = []
    real = lm.generate

    def counting(model: object, tok: object, prompts: list[str], n: int = 360) -> list[str]:
        decoded.extend(prompts)
        return real(model, tok, prompts, n)

    monkeypatch.setattr(serving.lm, "generate", counting)
    models = serving.NoteModels(note_base, phi=None, registry=None)  # type: ignore[arg-type]
    first = models.generate(serving.BASE, ["Write a SOAP note.", "Write a note."], max_new_tokens=6)
    again = models.generate(serving.BASE, ["Write a note.", "Write a SOAP note."], max_new_tokens=6)
    assert again == first[::-1] and decoded == ["Write a SOAP note.", "Write a note."]
    with pytest.raises(LookupError, match="no registry"):
        models.generate("7", ["Write a note."])
