"""`careflow observe report`: the AI features' daily quality trend (seed P5, layer 2)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from careflow.observe.report import DayRow, daily
from starters.cli.common import IdTable, cli_pool, cli_settings, make_console

observe_app = typer.Typer(
    name="observe", help="AI observability: quality trends per feature and model.", no_args_is_help=True
)
console = make_console()


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


@observe_app.command("report")
def report(
    days: Annotated[int, typer.Option(help="How many days back.", min=1, max=90)] = 7,
    feature: Annotated[str | None, typer.Option(help="One feature (the gateway's use case).")] = None,
) -> None:
    """Per day, feature and model version: calls, errors, shadow answers, latency, length, cut-off
    answers, disclaimers, citations and flags (from llm_calls and llm_feedback; no text, no PHI)."""
    settings = cli_settings()

    async def run() -> list[DayRow]:
        pool = await cli_pool(settings, database_pool_max=2)
        try:
            return await daily(pool, days, feature)
        finally:
            await pool.close()

    rows = asyncio.run(run())
    table = IdTable(
        "day",
        "feature",
        "model",
        "calls",
        "errors",
        "shadow",
        "p50 ms",
        "p95 ms",
        "chars",
        "cut off",
        "disclaimer",
        "citations",
        "flagged",
        ids=("feature", "model"),
    )
    for r in rows:
        table.add_row(
            r.day.isoformat(),
            r.feature,
            r.model,
            str(r.calls),
            f"{r.errors} ({r.error_rate:.1%})",
            str(r.shadow),
            f"{r.p50_ms:.0f}",
            f"{r.p95_ms:.0f}",
            f"{r.mean_chars:.0f}",
            _share(r.max_tokens_share),
            _share(r.disclaimer_share),
            "-" if r.mean_citations is None else f"{r.mean_citations:.1f}",
            str(r.flagged),
        )
    console.print(table if table.rows else f"no AI calls in the last {days} days")
