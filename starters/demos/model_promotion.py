"""`careflow demo model-promotion` (`make demo-model`), declared by the model-promotion pipeline
(workers/pipelines.py).

The whole saga on this machine's CPU: a candidate fine-tuned on the synthetic EHR export (de-identified,
LoRA, DP-SGD at epsilon 8), evaluated, blind-reviewed, through a shortened shadow and canary with their
golden-query gates, to champion.  Then a deliberately weak candidate (a small export, one epoch: better
than the base, so it passes the base-vs-candidate gates, worse than the champion) is caught by the
golden gate in canary and rolled back: routing to the champion, the version rejected, operations told.

The blind review's votes come from a stand-in reviewer that prefers the note with more of the SOAP
sections in order (printed as such); in production clinical informatics physicians vote with
`careflow model review`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.markup import escape
from temporalio.client import Client

from careflow.config import Settings, load_settings
from careflow.finetune.evaluate import soap_format
from careflow.models.model_promotion import (
    NOTE_DRAFT,
    BlindVote,
    DataSpec,
    PromotionInput,
    PromotionStage,
    PromotionStatus,
    TrainSpec,
)
from careflow.security.logging import configure_logging
from starters.cli.common import cli_connect, cli_pool
from starters.cli.model import console, describe, follow
from starters.clients import model_promotion as client_of

DEMO_REVIEWER = "demo-reviewer (prefers SOAP sections in order; physicians vote in production)"


async def review_all(client: Client, settings: Settings, wid: str, st: PromotionStatus) -> None:
    """The stand-in reviewer votes on every blind pair, without knowing which side is the candidate."""
    pool = await cli_pool(settings, database_pool_max=2)
    try:
        for p in client_of.pairs(settings, st):
            a, b = soap_format(p.a), soap_format(p.b)
            prefer = "A" if a > b else "B" if b > a else "same"
            await client_of.vote(
                client, wid, BlindVote(reviewer="demo-reviewer", pair=p.pair, prefer=prefer), pool
            )
    finally:
        await pool.close()


async def saga(client: Client, settings: Settings, inp: PromotionInput, title: str) -> PromotionStatus:
    console.print(f"\n[bold]== {title} ==[/bold]")
    started = await client_of.start(client, inp)
    wid = started.workflow_id
    console.print(f"{escape(wid)}: {escape(settings.workflow_url(wid))}")
    st = await follow(client, wid, frozenset({PromotionStage.AWAITING_REVIEW}))
    if st.stage is PromotionStage.AWAITING_REVIEW:
        console.print(describe(st))
        console.print(f"blind review: {st.review.pairs} pairs, votes by {DEMO_REVIEWER}")
        await review_all(client, settings, wid, st)
        st = await follow(client, wid)
    console.print(describe(st))
    return st


def candidates(
    patients: int, shadow_seconds: float, canary_seconds: float, suffix: str = ""
) -> tuple[PromotionInput, PromotionInput]:
    """A sound candidate through every stage, and a weak one (25 patients, one epoch) straight to canary;
    shadow and canary shortened to seconds."""
    shadow, canary = shadow_seconds / 3600, canary_seconds / 3600
    good = PromotionInput(
        feature=NOTE_DRAFT,
        candidate=client_of.candidate_name() + suffix,
        data=DataSpec(patients=patients),
        shadow_hours=shadow,
        canary_hours=canary,
        check_minutes=0.25,
    )
    weak = PromotionInput(
        feature=NOTE_DRAFT,
        candidate=client_of.candidate_name() + suffix + "-weak",
        data=DataSpec(patients=25),
        train=TrainSpec(epochs=1),
        shadow_hours=0,
        canary_hours=canary,
        check_minutes=0.25,
    )
    return good, weak


async def run_demo(settings: Settings, patients: int, shadow_seconds: float, canary_seconds: float) -> None:
    client = await cli_connect(settings)
    good, weak = candidates(patients, shadow_seconds, canary_seconds)
    first = await saga(client, settings, good, f"1. a candidate fine-tuned on {patients} patients' notes")
    second = await saga(
        client, settings, weak, "2. a weak candidate (25 patients, one epoch) straight to canary"
    )
    console.print("\n[bold]== where to look ==[/bold]")
    console.print(f"first: {first.stage.value}; second: {second.stage.value}")
    console.print("versions, routing and golden runs: careflow model versions")
    console.print(f"the sagas in the Web UI: {escape(settings.workflow_url())}")
    console.print(
        "a real review: careflow model promote, then careflow model review <workflow id> --reviewer <you>"
    )
    console.print(
        f"the version before one step away: careflow model rollback --feature {good.feature} "
        "--by <you> --reason <why>"
    )


def model_promotion(
    patients: Annotated[
        int, typer.Option(help="Patients in the first candidate's export (4 notes each).")
    ] = 150,
    shadow_seconds: Annotated[float, typer.Option(help="The shadow period (a week in production).")] = 30,
    canary_seconds: Annotated[float, typer.Option(help="The canary period (a day in production).")] = 60,
) -> None:
    """Promote a fine-tuned note model through every gate, then catch a weak one in canary.

    Declared as the model-promotion pipeline's demo (workers/pipelines.py): `careflow demo model-promotion`.
    """
    settings = load_settings()
    configure_logging("WARNING", settings.log_format)
    asyncio.run(run_demo(settings, patients, shadow_seconds, canary_seconds))
