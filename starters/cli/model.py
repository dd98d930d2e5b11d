"""`careflow model ...`: the note model's lifecycle (seed P9, P5, P17).

promote (follows the saga) | status | review (blind pairs) | clearance | rollback | versions | golden
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, TypeVar

import asyncpg
import typer
from pydantic import ValidationError
from rich.markup import escape
from temporalio.client import Client

from careflow.config import Settings
from careflow.finetune import deployment
from careflow.finetune.registry import open_note_registry
from careflow.models.model_promotion import (
    FEATURES,
    GOLDEN_FEATURES,
    NOTE_DRAFT,
    WORKFLOW_ID_PREFIX,
    BlindVote,
    Clearance,
    DataSpec,
    PromotionInput,
    PromotionStage,
    PromotionStatus,
    RestoreResult,
    Rollback,
    TrainSpec,
    rollback_id,
)
from careflow.observe import runs
from careflow.validation import error_fields
from starters.cli.common import (
    CliError,
    IdTable,
    cli_connect,
    cli_pool,
    cli_settings,
    find_workflow,
    last_heartbeat,
    make_console,
)
from starters.clients import model_promotion as client_of
from starters.clients.updates import ReviewRefused

T = TypeVar("T")

model_app = typer.Typer(
    name="model", help="The note model: fine-tune, review, promote, roll back.", no_args_is_help=True
)
console = make_console()


async def resolve(client: Client, given: str) -> str:
    return await find_workflow(
        client,
        given,
        prefix=WORKFLOW_ID_PREFIX,
        workflow_type="ModelPromotionWorkflow",
        what="model promotion",
        listing="careflow model versions",
    )


def describe(st: PromotionStatus) -> str:
    """One line per stage reached: what the gates measured."""
    lines = [f"stage {st.stage.value}" + (f": {st.reason}" if st.reason else "")]
    if st.prepared:
        lines.append(f"  data: {st.prepared.counts} examples, hash {st.prepared.data_hash[:12]}")
    if st.trained:
        t = st.trained
        eps = f"epsilon {t.epsilon:.2f} at delta {t.delta:.1e}" if t.epsilon is not None else "no DP"
        resumed = f", resumed at step {t.resumed_from}" if t.resumed_from else ""
        lines.append(f"  trained: {t.steps} steps in {t.seconds:.0f} s, loss {t.loss:.3f}, {eps}{resumed}")
    if st.scores:
        s = st.scores
        lines.append(
            f"  evaluation: ROUGE-L {s.get('rouge_l_base', 0):.3f} -> {s.get('rouge_l', 0):.3f}, "
            f"SOAP sections {s.get('soap_format_base', 0):.0%} -> {s.get('soap_format', 0):.0%}, "
            "canaries reproduced "
            f"{s.get('canaries_reproduced', 0):.0f}/{s.get('canaries_tested', 0):.0f}"
        )
    if st.version:
        lines.append(f"  registry: version {st.version} (champion before: {st.champion_before or '-'})")
    r = st.review
    if r.pairs:
        votes = (
            f"; candidate {r.candidate}, base {r.base}, same {r.same}"
            if r.candidate + r.base + r.same
            else ""
        )
        lines.append(f"  blind review: {r.voted}/{r.pairs} pairs voted{votes}")
    for g in st.golden:
        verdict = "REGRESSED" if g.regressed else "ok"
        lines.append(
            f"  golden ({g.version}): {g.score:.3f} vs baseline {g.baseline or 0:.3f}, "
            f"drop {g.drop:.1%} {verdict}"
        )
    if st.flag_rate:
        f = st.flag_rate
        lines.append(f"  flag rate (30 min): {f.flags}/{f.responses} = {f.rate:.1%}")
    lines += [f"  undone: {u}" for u in st.undone]
    return "\n".join(lines)


async def follow(client: Client, wid: str, until: frozenset[PromotionStage] | None = None) -> PromotionStatus:
    """Print each stage as the saga reaches it (training with its step and loss) until it settles or
    reaches one of `until`."""
    shown, last_step = "", -1
    while True:
        st = await client_of.status(client, wid)
        if st.stage.value != shown:
            shown = st.stage.value
            console.print(f"[bold]{shown}[/bold]")
        if st.stage is PromotionStage.TRAINING:
            beat = await last_heartbeat(client, client.get_workflow_handle(wid)) or {}
            if beat.get("step", -1) != last_step and "total" in beat:
                last_step = beat["step"]
                console.print(f"  step {beat['step']}/{beat['total']} loss {beat.get('loss', 0):.3f}")
        if st.stage.settled or (until and st.stage in until):
            return st
        await asyncio.sleep(1.0)


@model_app.command("promote")
def promote(
    candidate: Annotated[
        str | None, typer.Option(help="The candidate's name (default: date + suffix).")
    ] = None,
    feature: Annotated[str, typer.Option(help=f"The AI feature: {', '.join(FEATURES)}.")] = NOTE_DRAFT,
    patients: Annotated[int, typer.Option(help="Patients in the synthetic EHR export (4 notes each).")] = 150,
    seed: Annotated[int, typer.Option(help="The export's seed.")] = 11,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 5,
    epsilon: Annotated[float, typer.Option(help="DP-SGD epsilon to spend (<= 8); 0: no DP.")] = 8.0,
    intended_use: Annotated[
        str, typer.Option(help="documentation, or a diagnostic use (needs a 510(k)).")
    ] = "documentation",
    review_pairs: Annotated[int, typer.Option(help="Blind comparisons reviewers vote on.")] = 50,
    shadow_hours: Annotated[float, typer.Option(help="Shadow period (0: none).")] = 168.0,
    canary_hours: Annotated[float, typer.Option(help="Canary period at 10 %.")] = 24.0,
    wait: Annotated[bool, typer.Option(help="Follow the saga until it needs reviewers or ends.")] = True,
) -> None:
    """Start the promotion saga for a new candidate (`model-promotion-<feature>-<candidate>`)."""
    settings = cli_settings()
    if feature not in FEATURES:
        raise CliError(f"unknown feature {feature!r}: one of {', '.join(FEATURES)}")
    inp = PromotionInput(
        feature=feature,
        candidate=candidate or client_of.candidate_name(),
        data=DataSpec(export_seed=seed, patients=patients),
        train=TrainSpec(epochs=epochs, target_epsilon=epsilon or None),
        intended_use=intended_use,
        review_pairs=review_pairs,
        shadow_hours=shadow_hours,
        canary_hours=canary_hours,
    )

    async def run() -> None:
        client = await cli_connect(settings)
        started = await client_of.start(client, inp)
        verb = "started" if started.started else "already running (attached)"
        console.print(
            f"{escape(started.workflow_id)} {verb}: {escape(settings.workflow_url(started.workflow_id))}"
        )
        if wait:
            st = await follow(client, started.workflow_id, frozenset({PromotionStage.AWAITING_REVIEW}))
            console.print(describe(st))
            if st.stage is PromotionStage.AWAITING_REVIEW:
                console.print(f"reviewers: careflow model review {started.workflow_id} --reviewer <you>")

    asyncio.run(run())


@model_app.command("status")
def status(workflow: Annotated[str, typer.Argument(help="model-promotion-<feature>-<candidate>")]) -> None:
    """Where a promotion stands, with what each gate measured."""
    settings = cli_settings()

    async def run() -> tuple[str, PromotionStatus]:
        client = await cli_connect(settings)
        wid = await resolve(client, workflow)
        return wid, await client_of.status(client, wid)

    wid, st = asyncio.run(run())
    console.print(f"{escape(wid)}: {escape(settings.workflow_url(wid))}")
    console.print(describe(st))


def _steer(
    settings: Settings, workflow: str, what: str, send: Callable[[Client, str, asyncpg.Pool], Awaitable[T]]
) -> tuple[str, T]:
    """One audited update to the saga (a refusal is audited, and said here with its reason)."""

    async def run() -> tuple[str, T]:
        client = await cli_connect(settings)
        wid = await resolve(client, workflow)
        pool = await cli_pool(settings, database_pool_max=2)
        try:
            return wid, await send(client, wid, pool)
        except ReviewRefused as exc:
            raise CliError(f"{wid}: {what} refused ({exc.reason})") from None
        finally:
            await pool.close()

    return asyncio.run(run())


def _vote(settings: Settings, wid: str, v: BlindVote) -> None:
    _, t = _steer(settings, wid, "vote", lambda c, w, pool: client_of.vote(c, w, v, pool))
    console.print(f"pair {v.pair}: {v.prefer} recorded ({t.voted}/{t.pairs} pairs voted)")


@model_app.command("review")
def review(
    workflow: Annotated[str, typer.Argument(help="model-promotion-<feature>-<candidate>")],
    reviewer: Annotated[str, typer.Option(help="Who votes (kept in the registry as an approval).")],
    pair: Annotated[int | None, typer.Option(help="Vote on this pair only (with --prefer).")] = None,
    prefer: Annotated[Literal["A", "B", "same"] | None, typer.Option(help="A, B or same.")] = None,
) -> None:
    """Blind comparison: each pair's two notes as A and B (which is the fine-tuned model stays hidden);
    vote on every pair, or on one with --pair and --prefer."""
    settings = cli_settings()

    async def find() -> tuple[str, PromotionStatus]:
        client = await cli_connect(settings)
        wid = await resolve(client, workflow)
        return wid, await client_of.status(client, wid)

    wid, st = asyncio.run(find())
    if st.stage is not PromotionStage.AWAITING_REVIEW:
        raise CliError(f"{wid} is {st.stage.value}: no blind review is open")
    if pair is not None or prefer is not None:
        if pair is None or prefer is None:
            raise CliError("--pair and --prefer go together")
        _vote(settings, wid, BlindVote(reviewer=reviewer, pair=pair, prefer=prefer))
        return
    for p in client_of.pairs(settings, st):
        console.print(f"\n[bold]pair {p.pair + 1} of {st.review.pairs}[/bold]")
        console.print(f"[bold]prompt[/bold] {escape(p.prompt)}")
        console.print(f"\n[bold]A[/bold]\n{escape(p.a)}\n\n[bold]B[/bold]\n{escape(p.b)}")
        answer = typer.prompt("better note: A, B or same", default="same")
        if answer not in ("A", "B", "same"):
            raise CliError(f"{answer!r}: answer A, B or same")
        _vote(settings, wid, BlindVote(reviewer=reviewer, pair=p.pair, prefer=answer))


@model_app.command("clearance")
def clearance(
    workflow: Annotated[str, typer.Argument(help="model-promotion-<feature>-<candidate>")],
    number: Annotated[str, typer.Argument(help="The FDA 510(k) number, e.g. K213456.")],
    by: Annotated[str, typer.Option(help="Who attaches it (regulatory affairs).")],
) -> None:
    """Attach the 510(k) clearance a diagnostic intended use needs before deployment."""
    c = Clearance(number=number, by=by)
    wid, _ = _steer(
        cli_settings(), workflow, "clearance", lambda cl, w, pool: client_of.clearance(cl, w, c, pool)
    )
    console.print(f"{escape(wid)}: clearance {escape(number)} attached")


@model_app.command("rollback")
def rollback(
    by: Annotated[str, typer.Option(help="Who rolls back.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the registry and the deployment events).")],
    workflow: Annotated[
        str | None, typer.Argument(help="model-promotion-<feature>-<candidate>: a candidate in its saga.")
    ] = None,
    feature: Annotated[
        str | None, typer.Option(help="Instead: take the feature's promoted champion back one step.")
    ] = None,
) -> None:
    """Stop a candidate now, in any stage (routing back to the champion, the version rejected, ops
    alerted); or, with --feature, put back the champion before the promoted one."""
    if (workflow is None) == (feature is None):
        raise CliError("name a promotion saga (model-promotion-...) or --feature, one of them")
    settings = cli_settings()
    try:
        r = Rollback(by=by, reason=reason)  # the same checks a post-promotion rollback's input makes
    except ValidationError as exc:
        raise CliError(f"invalid rollback: {error_fields(exc)}") from None
    if workflow is not None:
        wid, st = _steer(settings, workflow, "rollback", lambda c, w, pool: client_of.rollback(c, w, r, pool))
        console.print(f"{escape(wid)}: {st.stage.value}")
        console.print(describe(st))
        return
    assert feature is not None

    async def run() -> RestoreResult:
        client = await cli_connect(settings)
        pool = await cli_pool(settings, database_pool_max=2)
        try:
            return await client_of.restore(client, pool, feature, by, reason)
        finally:
            await pool.close()

    back = asyncio.run(run())
    if back.outcome == "refused":
        raise CliError(f"{feature}: rollback refused ({back.reason})")
    console.print(
        f"{escape(rollback_id(feature, back.version))}: version {back.version} rolled back; "
        f"{back.back_to or 'the base'} serves {feature}"
    )


@model_app.command("versions")
def versions(feature: Annotated[str, typer.Option(help="The AI feature.")] = NOTE_DRAFT) -> None:
    """The registry's versions of the note model, what serves the feature now, and recent golden runs."""
    settings = cli_settings()
    table = IdTable(
        "version",
        "stage",
        "aliases",
        "candidate",
        "ROUGE-L",
        "epsilon",
        "intended use",
        "workflow",
        ids=("workflow",),
    )
    for v in open_note_registry(settings).versions():
        table.add_row(
            v.version,
            v.tag("stage"),
            ",".join(v.aliases) or "-",
            v.tag("candidate"),
            v.tag("rouge_l", "-"),
            v.tag("epsilon") or "-",
            v.tag("intended_use"),
            v.tag("workflow_id"),
        )
    console.print(table if table.rows else "no versions yet: `careflow model promote`")

    async def run() -> tuple[deployment.Deployment, list[asyncpg.Record]]:
        pool = await cli_pool(settings, database_pool_max=2)
        try:
            return await deployment.current(pool, feature), list(await runs.recent(pool, feature, 5))
        finally:
            await pool.close()

    d, recent = asyncio.run(run())
    stage = f", candidate {d.candidate} in {d.stage.value} ({d.percent} %)" if d.candidate and d.stage else ""
    console.print(f"{feature}: champion {d.champion or 'the base model'}{stage}")
    for r in recent:
        console.print(
            f"  golden {r['created_at']:%Y-%m-%d %H:%M} {r['trigger']}: version {r['version']} "
            f"{r['score']:.3f}" + (" REGRESSED" if r["regressed"] else "")
        )


@model_app.command("golden")
def golden(
    feature: Annotated[str, typer.Option(help=f"The AI feature: {', '.join(GOLDEN_FEATURES)}.")] = NOTE_DRAFT,
    schedule: Annotated[bool, typer.Option(help="Create (or update) the daily Schedule instead.")] = False,
) -> None:
    """Run the feature's golden queries now against the champion's baseline (or put the daily Schedule)."""
    settings = cli_settings()

    async def run() -> None:
        client = await cli_connect(settings)
        if schedule:
            created = await client_of.ensure_golden_schedule(client, feature)
            console.print(f"golden-evaluation Schedule for {feature} {'created' if created else 'updated'}")
            return
        g = await client_of.golden_now(client, feature)
        verdict = "REGRESSED: operations alerted" if g.regressed else "within 10 % of the baseline"
        console.print(
            f"{feature} version {g.version}: {g.score:.3f} over {g.n} golden queries "
            f"(baseline {g.baseline or g.score:.3f}, drop {g.drop:.1%}): {verdict}"
        )

    asyncio.run(run())
