"""What every `careflow` command uses: settings (a bad one is a one-line error) and careflow's PHI-safe
JSON logger; the one way to make a console and a table of ids; the one way to connect to Temporal and
Postgres; and `CliError`, the one way to end a command with a line the operator can act on.

Output rules (ids, URLs and commands are pasted into other commands, the Web UI, tickets):

- a console never wraps or crops a plain line (soft wrap: a terminal folds a long line on screen,
  and copying it gives it back whole); prose that should wrap says so (`soft_wrap=False`);
- without a terminal (CI logs, `| tee`, a pipe) nothing has a width: tables print at their natural
  width, whatever COLUMNS says;
- in a terminal, an `IdTable`'s id columns keep their whole width while the other columns wrap;
  only a terminal too narrow for the ids themselves folds them, every character kept (never `…`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import IO, TYPE_CHECKING, Any

import asyncpg
from rich.console import Console, ConsoleDimensions, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Column, Table
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from careflow.config import Settings, load_settings
from careflow.security.logging import configure_logging

if TYPE_CHECKING:
    from careflow.fhir.client import FhirClient

STACK_HINT = "is the stack up? `careflow dev up`, then `careflow dev status`"
UNBOUNDED = 10_000  # a console's width without a terminal: tables size to their content


class CliError(Exception):
    """A failure the operator can act on: `str()` is one line naming what was wrong and what to do.
    starters/cli/main.py main() prints it as `careflow: <line>` on stderr and exits 1, no traceback."""


def cli_settings() -> Settings:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


# -- output -------------------------------------------------------------------------------------
class _Console(Console):
    """rich's Console, unbounded when it writes to no terminal (decided at each print, so a stream
    redirected after import counts)."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNBOUNDED, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def make_console(*, stderr: bool = False, file: IO[str] | None = None, **options: Any) -> Console:
    """The console every command prints through (see the module's output rules)."""
    return _Console(stderr=stderr, file=file, soft_wrap=True, **options)


class IdTable(Table):
    """A table whose `ids` columns (by header) hold identifiers, URLs or commands.  Each id column,
    in the order `ids` names them, is as wide as its longest value while the terminal leaves the
    other columns room to wrap; an id column that does not fit folds like the rest.  No column ever
    cuts a value with `…`, and the table never expands to the console's width.  It sets its columns'
    width, overflow and wrapping itself, at each render."""

    OTHER_MIN = 10  # what a wrapping column keeps before an id column gives up its whole width

    def __init__(self, *headers: Column | str, ids: Iterable[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("expand", False)
        super().__init__(*headers, **kwargs)
        self.ids = list(ids)

    def _fit(self, console: Console, options: ConsoleOptions) -> None:
        unbounded = options.update_width(UNBOUNDED)
        natural: dict[str, int] = {}
        need = len(self.columns) + 1 if self.box else 0
        for i, column in enumerate(self.columns):
            column.overflow, column.no_wrap, column.width = "fold", False, None
            cells = [column.header, *column.cells]
            natural[str(column.header)] = width = max(
                Measurement.get(console, unbounded, c).maximum for c in cells
            )
            need += self._get_padding_width(i) + min(width, self.OTHER_MIN)
        by_header = {str(c.header): c for c in self.columns}
        for header in self.ids:
            if header not in by_header:
                continue
            more = natural[header] - min(natural[header], self.OTHER_MIN)
            if need + more <= options.max_width:
                by_header[header].width = natural[header]
                need += more

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        self._fit(console, options)
        return super().__rich_measure__(console, options)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self._fit(console, options)
        yield from super().__rich_console__(console, options)


# -- the stack ----------------------------------------------------------------------------------
async def cli_connect(settings: Settings, *, identity: str | None = None) -> Client:
    """The Temporal client (THE data converter); an unreachable server is a CliError."""
    from careflow.security.temporal import connect

    try:
        return await connect(settings, identity=identity)
    except RuntimeError as exc:
        if "connect" not in str(exc).lower():
            raise
        raise CliError(f"cannot reach Temporal at {settings.temporal_address}: {STACK_HINT}") from None


async def cli_pool(settings: Settings, **overrides: Any) -> asyncpg.Pool:
    """careflow's asyncpg pool (settings overridden, e.g. database_pool_max=2); an unreachable
    database is a CliError."""
    from careflow.db.pool import create_pool

    try:
        return await create_pool(settings.model_copy(update=overrides) if overrides else settings)
    except (OSError, asyncpg.CannotConnectNowError, asyncpg.InvalidCatalogNameError) as exc:
        raise CliError(f"cannot reach Postgres ({exc}): {STACK_HINT}") from None


@asynccontextmanager
async def cli_fhir(settings: Settings, actor: str) -> AsyncIterator[FhirClient]:
    """The EHR at `settings.fhir_base_url`, audited into careflow's trail as `actor` (its own pool)."""
    from careflow.audit.trail import PostgresAuditTrail
    from careflow.fhir.auth import token_provider
    from careflow.fhir.client import FhirClient

    pool = await cli_pool(settings)
    try:
        async with FhirClient(
            settings.fhir_base_url,
            audit=PostgresAuditTrail(pool),
            actor=actor,
            token=token_provider(settings),
        ) as fhir:
            yield fhir
    finally:
        await pool.close()


async def last_heartbeat(client: Client, handle: WorkflowHandle[Any, Any]) -> dict[str, Any] | None:
    """A running activity's last heartbeat (a dict: progress), decoded with the client's codec."""
    desc = await handle.describe()
    for pending in desc.raw_description.pending_activities:
        if pending.heartbeat_details.payloads:
            [details] = await client.data_converter.decode(pending.heartbeat_details.payloads, [dict])
            return dict(details)
    return None


async def find_workflow(
    client: Client, given: str, *, prefix: str, workflow_type: str, what: str, listing: str
) -> str:
    """The id of the `workflow_type` workflow that `given` names: a whole workflow id (one started
    from the `temporal` CLI under any id too), or the id without careflow's `prefix` (an order id,
    a result key).  A missing workflow, or one of another type, is a CliError naming `listing`."""
    candidates = [given] if given.startswith(prefix) else [prefix + given, given]
    for wid in candidates:
        try:
            found = await client.get_workflow_handle(wid).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue
            raise CliError(f"cannot look up workflow {wid}: {exc.message}") from None
        if found.workflow_type != workflow_type:
            raise CliError(
                f"{wid} is a {found.workflow_type}, not a {what} workflow; `{listing}` lists those"
            )
        return wid
    tried = " nor ".join(candidates)
    raise CliError(f"no {what} workflow {tried}; `{listing}` lists them")
