"""The note model at toy size for tests: a base built in seconds the way careflow builds its own (a
tokenizer and a small LM trained on free-text notes of another export, no SOAP sections, no prompts),
and the LoRA shape that trains on it."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from careflow.finetune import lm
from careflow.finetune.export import export, general_corpus
from careflow.finetune.prep import Example, prompt_for

TINY = lm.BaseConfig(
    vocab_size=600, hidden=64, layers=1, heads=2, intermediate=128, max_tokens=512, steps=200, batch=4
)
TRAIN = lm.TrainConfig(epochs=2, batch=4, rank=4, alpha=8, target_epsilon=None, checkpoint_every=3)


@cache
def examples() -> list[Example]:
    out = []
    for n in export(9, 6, canaries=1):
        if n.defect is None:
            out.append(Example(n.note_id, prompt_for(n), n.text, "train", n.canary))
    return out


def tiny_base(out: Path) -> Path:
    return lm.build_base(general_corpus(99, 12), out, TINY)
