"""`careflow teams create|list|set|token` and `careflow cost report`: the AI gateway's teams
(tiers, budgets, rate limits, PHI permission), their tokens, and the monthly cost report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, TypeVar

import asyncpg
import typer
from pydantic import ValidationError
from rich.markup import escape

from careflow.config import Settings
from careflow.llm.budget import month_of
from careflow.llm.config import GatewayConfig
from careflow.llm.cost import cost_report, write_csv
from careflow.llm.errors import UnknownTeam
from careflow.llm.teams import Team, TeamStore, sign_team_token
from careflow.llm.types import Tier
from starters.cli.common import CliError, IdTable, cli_pool, cli_settings, make_console

teams_app = typer.Typer(help="AI gateway teams: tiers, budgets, rate limits, tokens.", no_args_is_help=True)
cost_app = typer.Typer(help="AI gateway cost attribution.", no_args_is_help=True)
console = make_console()

T = TypeVar("T")
DEFAULT_BUDGET_USD = "100"  # a new team's monthly budget unless --budget says otherwise


def _with_pool(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def go() -> T:
        pool = await cli_pool(settings, database_pool_min=1, database_pool_max=2)
        try:
            return await work(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(go())
    except UnknownTeam as exc:
        raise CliError(
            f"{exc}; `careflow teams list` shows the teams, `careflow teams create` adds one"
        ) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _tiers(value: str | None) -> list[Tier] | None:
    if value is None:
        return None
    try:
        return [Tier(t.strip()) for t in value.split(",") if t.strip()]
    except ValueError:
        raise typer.BadParameter("comma-separated tiers: frontier, standard, efficient") from None


def _usd(value: str | None) -> Decimal | None:
    try:
        return None if value is None else Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter("an amount in USD, e.g. 2500 or 99.50") from None


def _show(teams: list[Team]) -> None:
    table = IdTable(
        "team", "name", "tiers", "budget/month (USD)", "tokens/min", "PHI", "KB tenants", ids=("team",)
    )
    for t in teams:
        table.add_row(
            escape(t.team_id),
            escape(t.display_name),
            ",".join(x.value for x in t.allowed_tiers),
            f"{t.monthly_budget_usd:,.2f}",
            f"{t.tokens_per_minute:,}",
            "yes" if t.phi_permitted else "no",
            ",".join(t.kb_tenants) or "-",
        )
    console.print(table)


TiersOpt = Annotated[str | None, typer.Option("--tiers", help="Allowed tiers, e.g. standard,efficient.")]
BudgetOpt = Annotated[str | None, typer.Option("--budget", help="Monthly budget in USD.")]
TpmOpt = Annotated[int | None, typer.Option("--tpm", help="Token rate limit per minute.")]
PhiOpt = Annotated[bool | None, typer.Option("--phi/--no-phi", help="May the team send PHI?")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Display name.")]
KbTenantsOpt = Annotated[
    str | None,
    typer.Option("--kb-tenants", help="Tenants whose knowledge base the team may query, e.g. default,east."),
]


def _tenants(value: str | None) -> list[str] | None:
    return None if value is None else [t.strip() for t in value.split(",") if t.strip()]


@teams_app.command("create")
def teams_create(
    team_id: str,
    budget: Annotated[
        str,
        typer.Option("--budget", help="Monthly budget in USD; change it later with `careflow teams set`."),
    ] = DEFAULT_BUDGET_USD,
    tpm: Annotated[int, typer.Option("--tpm", help="Token rate limit per minute.")] = 100_000,
    tiers: TiersOpt = "standard,efficient",
    phi: Annotated[bool, typer.Option("--phi/--no-phi", help="May the team send PHI?")] = False,
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    kb_tenants: KbTenantsOpt = "default",
) -> None:
    """Create a team (by default: 100 USD a month, 100,000 tokens a minute, standard and efficient
    tiers, no PHI, the `default` knowledge base)."""
    try:
        team = Team(
            team_id=team_id,
            display_name=name,
            allowed_tiers=_tiers(tiers) or [],
            monthly_budget_usd=_usd(budget) or Decimal(0),
            tokens_per_minute=tpm,
            phi_permitted=phi,
            kb_tenants=_tenants(kb_tenants) or [],
        )
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None

    async def work(pool: asyncpg.Pool) -> Team:
        try:
            return await TeamStore(pool).create(team)
        except ValueError as exc:  # it exists
            raise ValueError(f"{exc}; change it with `careflow teams set {team_id}`") from None

    _show([_with_pool(cli_settings(), work)])


@teams_app.command("list")
def teams_list() -> None:
    """List the teams."""
    _show(_with_pool(cli_settings(), lambda pool: TeamStore(pool).all()))


@teams_app.command("set")
def teams_set(
    team_id: str,
    budget: BudgetOpt = None,
    tpm: TpmOpt = None,
    tiers: TiersOpt = None,
    phi: PhiOpt = None,
    name: NameOpt = None,
    kb_tenants: KbTenantsOpt = None,
) -> None:
    """Change a team's budget, rate limit, tiers, PHI permission, knowledge-base tenants or name."""
    changes = {
        "display_name": name,
        "allowed_tiers": _tiers(tiers),
        "monthly_budget_usd": _usd(budget),
        "tokens_per_minute": tpm,
        "phi_permitted": phi,
        "kb_tenants": _tenants(kb_tenants),
    }

    async def work(pool: asyncpg.Pool) -> Team:
        try:
            return await TeamStore(pool).update(team_id, **changes)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ValueError("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None

    _show([_with_pool(cli_settings(), work)])


@teams_app.command("token")
def teams_token(
    team_id: str,
    ttl_days: Annotated[int | None, typer.Option("--ttl-days", help="Validity (default: gateway's).")] = None,
) -> None:
    """Print a signed bearer token (JWT, HS256) for the team: the `api_key` of the anthropic SDK."""
    settings = cli_settings()
    _with_pool(settings, lambda pool: TeamStore(pool).get(team_id))  # the team must exist
    config = GatewayConfig()
    print(sign_team_token(config.signing_secret(settings), team_id, ttl_days or config.jwt_ttl_days))


@cost_app.command("report")
def cost_report_command(
    month: Annotated[str | None, typer.Option("--month", help="YYYY-MM (default: this month).")] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="Also write the report as CSV.")] = None,
) -> None:
    """Per-team LLM cost for a month: calls, tokens, cost, share of budget."""
    try:
        first = date.fromisoformat(f"{month}-01") if month else month_of()
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM", param_hint="--month") from None
    rows = _with_pool(cli_settings(), lambda pool: cost_report(pool, first))
    table = IdTable(
        "team",
        "calls",
        "failed",
        "prompt tok",
        "completion tok",
        "cached tok",
        "cost (USD)",
        "budget used",
        title=f"LLM cost {first:%Y-%m}",
        ids=("team",),
    )
    for r in rows:
        used = r.budget_used
        table.add_row(
            escape(r.team_id),
            f"{r.calls:,}",
            f"{r.failed:,}",
            f"{r.prompt_tokens:,}",
            f"{r.completion_tokens:,}",
            f"{r.cached_tokens:,}",
            f"{r.cost_usd:,.4f}",
            "-" if used is None else f"{used:.1%}",
        )
    table.add_section()
    total_cost = sum((r.cost_usd for r in rows), Decimal(0))
    table.add_row("total", f"{sum(r.calls for r in rows):,}", "", "", "", "", f"{total_cost:,.4f}", "")
    console.print(table)
    if csv_file is not None:
        write_csv(rows, first, csv_file)
        console.print(f"wrote {csv_file}")
