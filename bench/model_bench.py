"""The note model's fine-tuning stages on this machine (seed P9), figures printed with their goals, never
asserted: the same code the promotion saga's activities run, without servers.

- data preparation: a synthetic EHR note export (`--patients` x 4 notes, identifiers planted at known
  positions, defects, copy-forward duplicates, canaries) -> de-identification (share of planted
  identifiers removed, goal >= 99.5 %), quality filter, near-duplicate removal (cosine > 0.97), split;
- the base (built here once, under CAREFLOW_HOME/models/note-base unless `--base` names another);
- LoRA fine-tuning with DP-SGD at epsilon 8 (and without DP with `--no-dp`): steps, seconds, epsilon;
- evaluation on the test split: ROUGE-L and SOAP format adherence, base vs candidate; the
  memorization audit; flagged subgroups.

    .venv/bin/python -m bench.model_bench [--patients 150] [--no-dp] [--epochs 5]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=150)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--base", type=Path, default=None)
    p.add_argument("--no-dp", action="store_true")
    p.add_argument("--epochs", type=int, default=None)
    a = p.parse_args()

    from careflow.config import load_settings
    from careflow.finetune import lm
    from careflow.finetune.evaluate import evaluate
    from careflow.finetune.export import export
    from careflow.finetune.prep import prepare
    from careflow.kb.embed import get_embedder

    settings = load_settings()
    t = time.perf_counter()
    notes = export(a.seed, a.patients)
    exported = time.perf_counter() - t
    emb = get_embedder()
    t = time.perf_counter()
    examples, r = prepare(notes, emb.matrix)
    prepared = time.perf_counter() - t
    print(f"export: {r.exported} notes from {a.patients} patients in {exported:.1f} s")
    print(
        f"de-identification: {r.removed}/{r.planted} planted identifiers removed = {r.removed_share:.2%} "
        f"(goal >= 99.5 %: {'met' if r.removed_share >= 0.995 else 'MISSED'}); left: {r.missed or 'none'}; "
        f"method: {r.deid_method}"
    )
    print(
        f"quality filter: {r.filtered}; near-duplicates removed {r.duplicates} "
        f"({r.duplicates_matched} of {r.duplicates_expected} copy-forwards); splits {r.splits}; "
        f"canaries in train {r.canaries_in_train}; {prepared:.1f} s"
    )
    base_dir = a.base or settings.state_dir / "models" / "note-base"
    t = time.perf_counter()
    built = not (base_dir / "config.json").exists()
    lm.ensure_base(base_dir)
    print(f"base: {base_dir} ({'built' if built else 'already built'} in {time.perf_counter() - t:.1f} s)")
    train = [e for e in examples if e.split == "train"]
    test = [e for e in examples if e.split == "test"]
    cfg = lm.TrainConfig(target_epsilon=None if a.no_dp else 8.0)
    if a.epochs:
        cfg = replace(cfg, epochs=a.epochs)
    result = lm.finetune(base_dir, train, cfg)
    eps = f"epsilon {result.epsilon:.2f} at delta {result.delta:.1e}" if result.epsilon else "no DP"
    print(
        f"fine-tuning: {len(train)} examples, {result.steps} steps in {result.seconds:.1f} s "
        f"({result.seconds / result.steps:.2f} s/step), final loss {result.loss:.3f}; {result.privacy}; {eps}"
    )
    base_model, tok = lm.load(base_dir)
    candidate, _ = lm.with_adapter(base_dir, result.adapter, cfg)
    t = time.perf_counter()
    ev = evaluate(
        lambda ps: lm.generate(base_model, tok, ps), lambda ps: lm.generate(candidate, tok, ps), test, train
    )
    took = time.perf_counter() - t
    print(
        f"evaluation on {ev.n} held-out notes ({took:.1f} s): ROUGE-L base {ev.base_rouge_l:.3f} "
        f"-> candidate {ev.candidate_rouge_l:.3f}; SOAP sections base {ev.base_format:.0%} -> candidate "
        f"{ev.candidate_format:.0%}; memorization {len(ev.memorized)}/{ev.canaries_tested} canaries "
        f"reproduced; flagged subgroups {ev.flagged or 'none'}; gate: {ev.failures() or 'passes'}"
    )


if __name__ == "__main__":
    main()
