"""The `careflow` command line."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from careflow.config import ConfigError, Settings
from careflow.db.embedded import EmbeddedPostgresError
from careflow.db.migrate import MigrationError
from careflow.models.platform import CanaryOutput
from starters.cli import audit as cli_audit
from starters.cli import gateway as cli_gateway
from starters.cli import observe as cli_observe
from starters.cli import seed as cli_seed
from starters.cli.common import STACK_HINT, CliError, IdTable, cli_connect, cli_settings, make_console
from starters.devstack.stack import ComponentState, StackError
from workers import pipelines

app = typer.Typer(
    help="careflow: durable clinical AI pipelines on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(
    help="The embedded stack: Temporal dev server, Postgres, API, workers.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")
app.add_typer(db_app, name="db")

# Failures an operator can act on: one line, no traceback.
OPERATOR_ERRORS: tuple[type[Exception], ...] = (StackError, EmbeddedPostgresError, MigrationError, CliError)

console = make_console()


# -- dev stack ----------------------------------------------------------------------------------
@dev_app.command("up")
def dev_up(
    workers: Annotated[
        int | None, typer.Option(help="Worker processes per task queue (default: keep, or 1).")
    ] = None,
    check: Annotated[bool, typer.Option(help="Run the platform canary once everything is up.")] = True,
    standby: Annotated[
        bool, typer.Option(help="Also a hot standby: a streaming replica of Postgres (the DR site).")
    ] = False,
) -> None:
    """Start the embedded stack; components already running are left alone."""
    from starters.devstack.stack import DevStack

    settings = cli_settings()
    stack = DevStack(settings, say=lambda m: console.print(f"  {m}"))
    console.print("[bold]careflow dev up[/bold]")

    async def go() -> None:
        await stack.up(workers, with_standby=standby)
        if check and workers == 0:
            console.print("\nplatform canary: skipped (--workers 0: no worker to run it)")
        elif check:
            _print_canary(await _canary(settings, probe_timeout=30))

    asyncio.run(go())
    console.print(f"""
[bold]Where to look[/bold]
  Temporal Web UI : {settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows
  careflow API    : {settings.api_url}/docs
  stack settings  : {stack.home / "stack.env"}   (set -a; . {stack.home / "stack.env"}; set +a)
  logs            : {stack.log_dir}/
  temporal CLI    : temporal workflow list   (after sourcing stack.env; payloads decode via the codec)
  stop everything : careflow dev down""")


@dev_app.command("down")
def dev_down(
    purge: Annotated[
        bool, typer.Option(help="Also delete the stack's data: database, workflow history, logs, dev keys.")
    ] = False,
) -> None:
    """Stop, gracefully and by pid, everything `dev up` started."""
    from starters.devstack.stack import DevStack

    DevStack(cli_settings(), say=lambda m: console.print(f"  {m}")).down(purge=purge)


@dev_app.command("status")
def dev_status(
    canary: Annotated[bool, typer.Option(help="Also run the end-to-end platform canary.")] = True,
) -> None:
    """Report each component healthy or not, then run the platform canary end to end."""
    from starters.devstack.stack import DevStack

    settings = cli_settings()

    async def go() -> tuple[
        list[ComponentState], CanaryOutput | None, tuple[int, list[tuple[str, str]]] | None
    ]:
        stack = DevStack(settings)
        states = await stack.status()
        healthy = all(st.healthy for st in states)
        failed = await stack.failed_recently() if healthy else None
        return states, (await _canary(settings, probe_timeout=10) if canary and healthy else None), failed

    states, result, failed = asyncio.run(go())
    table = IdTable("component", "pid", "state", "detail", ids=("detail",))
    for st in states:
        table.add_row(
            st.name, str(st.pid or "-"), "[green]healthy[/]" if st.healthy else "[red]down[/]", st.detail
        )
    console.print(table)
    if failed is not None:
        count, newest = failed
        console.print(f"\nworkflows failed, terminated or timed out in the last 24 h: {count}")
        for wf_type, wid in newest:
            console.print(f"  {wf_type}  {wid}")
        if count:
            console.print(
                "  (resending a workflow's event starts it again; `temporal workflow show -w ID` says why)"
            )
    healthy = all(st.healthy for st in states)
    if result is not None:
        _print_canary(result)
        healthy = result.healthy
    raise typer.Exit(0 if healthy else 1)


@dev_app.command("record-history")
def dev_record_history(
    workflow_id: str,
    run_id: Annotated[str | None, typer.Option(help="A specific run (default: the latest).")] = None,
    out: Annotated[Path, typer.Option(help="Folder to write into.")] = Path("tests/histories"),
) -> None:
    """Export a workflow history (payloads decoded) into tests/histories/ for replay tests."""
    from temporalio.service import RPCError, RPCStatusCode

    from starters.clients.history import export_history

    settings = cli_settings()

    async def go() -> Path:
        client = await cli_connect(settings)
        try:
            return await export_history(client, workflow_id, out, run_id)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            run = f" run {run_id}" if run_id else ""
            raise CliError(f"no workflow {workflow_id}{run}; `temporal workflow list` lists them") from None

    console.print(f"wrote {escape(str(asyncio.run(go())))}")


QUEUES = pipelines.task_queues()


# -- processes ----------------------------------------------------------------------------------
@app.command("worker")
def worker(
    task_queue: Annotated[
        str, typer.Option(help=f"Task queue to poll ({', '.join(pipelines.task_queues())}).")
    ],
    identity: Annotated[str | None, typer.Option(help="Worker identity shown in the Web UI.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """Run one worker process on a task queue until SIGTERM (then drain)."""
    from workers.main import run_worker

    if task_queue not in (queues := pipelines.task_queues()):
        raise ConfigError(
            "--task-queue", f"{task_queue!r} is not a careflow task queue ({', '.join(queues)})"
        )
    asyncio.run(run_worker(cli_settings(), task_queue, identity=identity, metrics_port=metrics_port))


@app.command("api")
def api() -> None:
    """Serve the careflow HTTP API (codec endpoint, health, online paths)."""
    import uvicorn

    from starters.api.app import create_app

    settings = cli_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending SQL migrations (safe to run from several processes at once)."""
    from careflow.db.endpoint import active_url
    from careflow.db.migrate import migrate

    try:
        applied = asyncio.run(migrate(active_url(cli_settings())))
    except OSError as exc:
        raise CliError(f"cannot reach Postgres ({exc}): {STACK_HINT}") from None
    console.print(f"applied: {', '.join(applied) if applied else 'none pending'}")


@app.command("serve-llm")
def serve_llm(
    port: Annotated[int, typer.Option(help="Port of the OpenAI-compatible API.")] = 8012,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """A self-hosted inference server on this machine: the OpenAI-compatible API (POST
    /v1/chat/completions, GET /v1/models) answered by the offline engine, where production runs vLLM.
    Point the gateway at it with CAREFLOW_GATEWAY_SELF_HOSTED_BASE_URL=http://127.0.0.1:<port>."""
    import uvicorn

    from careflow.llm.local_server import app as llm_app

    print(f"careflow serve-llm: http://{host}:{port}/v1 (offline engine; Ctrl-C stops it)", flush=True)
    uvicorn.run(llm_app(), host=host, port=port, log_level="warning", log_config=None)


@app.command("canary")
def canary(
    queue: Annotated[list[str] | None, typer.Option(help="Task queue(s) to probe (default: all).")] = None,
) -> None:
    """Probe every task queue end to end: worker, database, payload codec."""
    result = asyncio.run(_canary(cli_settings(), queue, probe_timeout=10))
    _print_canary(result)
    raise typer.Exit(0 if result.healthy else 1)


async def _canary(
    settings: Settings, queues: list[str] | None = None, *, probe_timeout: float
) -> CanaryOutput:
    from starters.clients.canary import run_canary

    return await run_canary(await cli_connect(settings), queues, probe_timeout=probe_timeout)


def _print_canary(result: CanaryOutput) -> None:
    console.print(
        f"\n[bold]platform canary[/bold]: {'[green]healthy[/]' if result.healthy else '[red]unhealthy[/]'}"
    )
    for p in result.probes:
        console.print(
            f"  {p.task_queue}: worker {p.worker_identity}, database {'ok' if p.database_ok else 'FAILED'}"
            f" (pgvector {p.pgvector_version}),"
            f" codec {'ok' if p.codec_ok else 'FAILED'} (key {p.codec_key_id})"
            + (f" - {p.error}" if p.error else "")
        )
    for q, why in result.unreachable.items():
        console.print(f"  {q}: [red]unreachable[/] - {why}")


# -- command groups: the building blocks', then each pipeline's (workers/pipelines.py) -------------
app.add_typer(cli_audit.app, name="audit")
app.add_typer(cli_seed.app, name="seed")
app.add_typer(cli_gateway.teams_app, name="teams")
app.add_typer(cli_gateway.cost_app, name="cost")
app.add_typer(cli_observe.observe_app, name="observe")
demo_app = typer.Typer(help="End-to-end demonstrations on the embedded stack.", no_args_is_help=True)
for pipeline in pipelines.PIPELINES:
    for group in pipeline.commands:
        app.add_typer(group)
    if pipeline.demo is not None:
        demo_app.command(pipeline.name)(pipeline.demo)
app.add_typer(demo_app, name="demo")


def main() -> None:
    try:
        app()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ConfigError as exc:
        print(f"careflow: {exc}", file=sys.stderr)
        code = 2
    except OPERATOR_ERRORS as exc:
        print(f"careflow: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Temporal's Rust runtime threads can abort a finalizing interpreter (PyGILState_Release, exit
    # 134) after the command has finished; everything is flushed and closed, so skip finalization.
    os._exit(code)


if __name__ == "__main__":
    main()
