"""The note model's promotion saga through the embedded stack (`careflow dev up`), figures printed, never
asserted (seed P9, P5):

1. a candidate fine-tuned on `--patients` patients' notes (LoRA + DP-SGD at epsilon 8) through every gate
   with a shortened shadow and canary: the time of each stage, the golden scores;
2. a weak candidate (25 patients, one epoch: better than the base, worse than the champion) sent
   straight to canary: the time from its canary deployment to its rollback (the golden gate), against
   seed P5's goal of detecting a regression within an hour of a deployment.

The blind review is voted by the demo's stand-in reviewer (SOAP sections in order).

    .venv/bin/python -m bench.promotion_bench [--patients 150] [--shadow-seconds 30] [--canary-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime

HOUR = 3600.0


def stage_times(stages: list[tuple[str, datetime]]) -> list[tuple[str, float]]:
    """Each stage and how long the saga stayed in it (the last one: 0)."""
    return [
        (name, (stages[i + 1][1] - at).total_seconds() if i + 1 < len(stages) else 0.0)
        for i, (name, at) in enumerate(stages)
    ]


async def run(patients: int, shadow_seconds: float, canary_seconds: float) -> None:
    from careflow.config import load_settings
    from careflow.finetune import deployment
    from careflow.models.model_promotion import NOTE_DRAFT, workflow_id
    from starters.cli.common import cli_connect, cli_pool
    from starters.demos.model_promotion import candidates, saga

    settings = load_settings()
    client = await cli_connect(settings)
    good, weak = candidates(patients, shadow_seconds, canary_seconds, suffix="-bench")
    first = await saga(client, settings, good, f"bench 1: {patients} patients, DP epsilon 8")
    second = await saga(client, settings, weak, "bench 2: a weak candidate straight to canary")

    print("\n== figures ==")
    for label, st in (("candidate", first), ("weak candidate", second)):
        times = ", ".join(f"{name} {secs:.1f} s" for name, secs in stage_times(st.stages))
        print(f"{label} (version {st.version}): outcome {st.stage.value}; {times}")
        for g in st.golden:
            print(f"  golden {g.score:.3f} vs baseline {g.baseline or 0:.3f}: drop {g.drop:.1%}")
    pool = await cli_pool(settings, database_pool_max=2)
    try:
        wid = workflow_id(NOTE_DRAFT, weak.candidate)  # each change's actor is the saga that made it
        events = {
            r["action"]: r["at"] for r in await deployment.history(pool, NOTE_DRAFT) if r["actor"] == wid
        }
    finally:
        await pool.close()
    if "canary" in events and "rollback" in events:
        took = (events["rollback"] - events["canary"]).total_seconds()
        print(
            f"degraded deployment -> rollback: {took:.1f} s from its canary routing to the champion's return "
            f"(goal: detected within 1 h of a deployment; {took / HOUR:.4f}x)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=150)
    p.add_argument("--shadow-seconds", type=float, default=30)
    p.add_argument("--canary-seconds", type=float, default=60)
    a = p.parse_args()
    asyncio.run(run(a.patients, a.shadow_seconds, a.canary_seconds))


if __name__ == "__main__":
    main()
