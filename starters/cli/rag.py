"""`careflow ask "question"` and `careflow kb eval`: the knowledge-base query path from the command line.

Importing this module adds `eval` to the `kb` command group (starters/cli/kb.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from careflow.config import Settings
from careflow.kb.settings import KbSettings
from starters.cli.common import cli_pool, make_console
from starters.cli.kb import kb_app

ask_app = typer.Typer()  # `careflow ask`: a top-level command
console = make_console()
T = TypeVar("T")


async def _with_service(settings: Settings, kb: KbSettings, work: Callable[..., Awaitable[T]]) -> T:
    from careflow.kb.rag import RagService
    from careflow.llm.gateway import Gateway

    pool = await cli_pool(settings)
    try:
        return await work(RagService(pool, Gateway.from_settings(pool, settings), settings=kb))
    finally:
        await pool.close()


@ask_app.command("ask")
def ask(
    question: Annotated[str, typer.Argument(help="A clinical knowledge question (no patient data).")],
    tenant: Annotated[str, typer.Option("--tenant", help="Knowledge-base tenant.")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
) -> None:
    """Answer a clinical knowledge question from the knowledge base, with citations."""
    from careflow.kb.rag import RagError, RagResponse, RagService
    from starters.cli.common import cli_settings

    settings = cli_settings()

    async def run(service: RagService) -> RagResponse:
        return await service.answer(question, tenant, actor="careflow-cli")

    try:
        response = asyncio.run(_with_service(settings, KbSettings(), run))
    except (RagError, ValueError) as exc:
        console.print(f"[red]no answer[/red]: {escape(str(exc))}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(response.model_dump(mode="json"), indent=2))
        return
    # Prose wraps; its inline citations are "[kb:...]", not markup.
    console.print(response.answer, markup=False, soft_wrap=False)
    table = Table("document", "section", "effective", "organization")
    for c in response.citations:
        table.add_row(*map(escape, (c.document_title, c.section, c.effective_date, c.source_organization)))
    console.print(table)
    origin = "live"
    if response.cached:
        origin = f"cached at {response.cached_at:%Y-%m-%d %H:%M UTC}" if response.cached_at else "cached"
        origin += " (stale: the model was unavailable)" if response.stale else ""
    console.print(response.disclaimer, style="dim", markup=False, soft_wrap=False)
    console.print(f"{origin}; {response.latency_ms:.0f} ms; request {escape(str(response.request_id))}")


@kb_app.command("eval")
def evaluate(
    golden: Annotated[Path | None, typer.Option(help="Golden set (JSONL).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Paraphrase/distractor pairs (JSONL).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Cache threshold (default: configured).")] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Evaluate against this tenant instead of the set's.")
    ] = None,
    answers: Annotated[bool, typer.Option(help="Also generate answers (citation accuracy).")] = True,
) -> None:
    """Recall@5, MRR and citation accuracy on the golden set; cache hit and false-hit rates on the pairs."""
    from careflow.kb import evaluation as ev
    from careflow.kb.rag import RagService
    from starters.cli.common import cli_settings

    settings = cli_settings()
    configured = KbSettings()
    threshold = configured.cache_threshold if threshold is None else threshold
    # Answers are generated with the cache off: the golden set measures retrieval and generation.
    kb = configured.model_copy(update={"cache_enabled": False})
    items = ev.load_golden(golden or ev.GOLDEN_SET)
    pair_rows = ev.load_pairs(pairs or ev.CACHE_PAIRS)

    async def run(service: RagService) -> tuple[ev.RetrievalReport, ev.AnswerReport | None]:
        retrieval = await ev.evaluate_retrieval(service.pool, items, settings=kb, tenant_id=tenant)
        generated = await ev.evaluate_answers(service, items, tenant_id=tenant) if answers else None
        return retrieval, generated

    retrieval, generated = asyncio.run(_with_service(settings, kb, run))
    thresholds = sorted({*ev.THRESHOLDS, threshold})
    cache = ev.evaluate_cache(pair_rows, thresholds)

    table = Table("golden set", "value")
    table.add_row("questions", str(retrieval.questions))
    table.add_row(f"recall@{retrieval.k}", f"{retrieval.recall_at_k:.3f}")
    table.add_row(f"section recall@{retrieval.k}", f"{retrieval.section_recall_at_k:.3f}")
    table.add_row("MRR", f"{retrieval.mrr:.3f}")
    if generated is not None:
        table.add_row("answered", f"{generated.answered}/{generated.questions}")
        table.add_row("citation accuracy", f"{generated.citation_accuracy:.3f}")
        table.add_row("citations per answer", f"{generated.mean_citations:.2f}")
    console.print(table)
    if retrieval.misses:
        console.print(f"not in top {retrieval.k}: {', '.join(retrieval.misses)}")
    if generated is not None and generated.wrong_citations:
        console.print(f"no expected section cited: {', '.join(generated.wrong_citations)}")

    rows = Table("threshold", "paraphrase hit rate", "distractor false-hit rate", "without the guard")
    for row in cache.rows:
        mark = " *" if row.threshold == threshold else ""
        rows.add_row(
            f"{row.threshold:.2f}{mark}",
            f"{row.hit_rate:.1%} ({row.hits}/{row.paraphrases})",
            f"{row.false_hit_rate:.1%} ({row.false_hits}/{row.distractors})",
            f"{row.similarity_only_false_hit_rate:.1%}",
        )
    console.print(rows)
    if cache.false_hit_ids.get(threshold):
        console.print(f"false hits at {threshold}: {', '.join(cache.false_hit_ids[threshold])}")
    console.print("* configured threshold; 'without the guard': similarity alone decides")
