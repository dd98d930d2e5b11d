"""Readmission model quality and training time on the synthetic cohort (careflow/readmission/).

Generates `--discharges` discharges (default 50,000) from the documented generative risk model,
trains the LightGBM model on 80 % and prints, on the held-out 20 %: the model's AUROC beside LACE's
and the generator's own (the best any model can reach), the Brier score, calibration by decile,
sensitivity at the operating threshold, the subgroup table (flagged: AUROC 0.05 or more below
overall), and the training time.  Figures are printed with their ratio to the goal, never asserted.

    .venv/bin/python -m bench.risk_bench [--discharges 50000] [--seed 7] [--threshold 0.3]
"""

from __future__ import annotations

import argparse
import time

from careflow.readmission import cohort, evaluation, model

GOAL_AUROC = 0.80
GOAL_GAP_TO_BEST = 0.02


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--discharges", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threshold", type=float, default=0.3, help="operating threshold (the worklist's)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = cohort.generate(args.discharges, args.seed)
    train, test = data.split(0.2, args.seed)
    generated = time.perf_counter() - t0
    rounds: list[int] = []
    t1 = time.perf_counter()
    trained = model.train(train.X, train.y, seed=args.seed, on_round=lambda i, _: rounds.append(i))
    took = time.perf_counter() - t1
    p = trained.predict(test.X)
    report = evaluation.evaluate(test.y, p, test.groups, args.threshold)
    got, best = report.overall.auroc or 0.0, test.best_auroc()
    lace = evaluation.auroc(test.y, test.lace)

    print(f"cohort: {len(data):,} discharges (seed {args.seed}), {data.y.mean():.1%} readmitted; "
          f"generated in {generated:.1f} s")  # fmt: skip
    best_round = trained.booster.best_iteration
    print(f"training: {len(train):,} discharges, {len(rounds)} rounds (best {best_round}), {took:.1f} s")
    print(f"held out: {len(test):,} discharges")
    print(f"  AUROC model {got:.3f} (goal >= {GOAL_AUROC}: {got / GOAL_AUROC:.2f}x)")
    print(f"  AUROC LACE  {lace:.3f}")
    print(f"  AUROC best achievable (the generator's own risk) {best:.3f}; model gap {best - got:.3f} "
          f"(goal <= {GOAL_GAP_TO_BEST})")  # fmt: skip
    sens = report.overall.sensitivity or 0.0
    print(f"  Brier {report.overall.brier:.4f}; sensitivity at {args.threshold} {sens:.2f}")
    print("  calibration (mean predicted -> observed, per decile):")
    print("   " + "  ".join(f"{pred:.2f}->{seen:.2f}" for pred, seen, _ in report.calibration))
    print(f"subgroups (flag: AUROC <= overall - {evaluation.SUBGROUP_GAP}):")
    for r in report.subgroups:
        m = r.metrics
        auc = f"{m.auroc:.3f}" if m.auroc is not None else "  -  "
        mark = "FLAGGED" if r.flagged else ("" if r.judged else "(too small to judge)")
        print(f"  {r.attribute:<15} {r.value:<11} n={m.n:<6} events={m.events:<5} AUROC {auc} "
              f"Brier {m.brier:.4f} {mark}")  # fmt: skip


if __name__ == "__main__":
    main()
