"""`careflow dev up | status | down` for real, in a private home on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from careflow.db.embedded import EmbeddedPostgres
from careflow.net import free_port
from tests.support.cli import run_careflow
from workers import pipelines

pytestmark = pytest.mark.stack  # starts servers of its own


def free_port_run(count: int) -> int:
    """A port p such that p .. p+count-1 are all free now (workers take base + k)."""
    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for k in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREFLOW_", "TEMPORAL_"))}
    env.update(
        {
            "CAREFLOW_HOME": str(tmp_path / "home"),
            "CAREFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "CAREFLOW_TEMPORAL_UI_PORT": str(free_port()),
            "CAREFLOW_API_PORT": str(free_port()),
            "CAREFLOW_HL7_PORT": str(free_port()),
            "CAREFLOW_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/careflow",
            "CAREFLOW_STANDBY_PORT": str(free_port()),
            "CAREFLOW_WORKER_METRICS_PORT_BASE": str(free_port_run(2)),
            "CAREFLOW_WORKER_GRACEFUL_SHUTDOWN_SECONDS": "5",
            "COLUMNS": "200",
        }
    )
    return env


def careflow(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`careflow ARGS` in exactly the stack's environment (nothing of this test process's CAREFLOW_*)."""
    return run_careflow(*args, timeout=timeout, base=env)


def embedded_pg(home: Path) -> EmbeddedPostgres:
    return EmbeddedPostgres(pgdata=home / "pg", port=0, log_file=home / "logs" / "postgres.log")


def recorded_pids(home: Path) -> dict[str, int]:
    pids = {p.stem: json.loads(p.read_text())["pid"] for p in (home / "run").glob("*.json")}
    pg = embedded_pg(home).pid()
    if pg is not None:
        pids["postgres"] = pg
    return pids


def temporal_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "temporal"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def processes_of(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(home) in part for part in proc.info["cmdline"] or []) or proc.environ().get(
                "CAREFLOW_HOME"
            ) == str(home):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_up_is_idempotent_survives_restart_and_down_leaves_nothing(stack_env: dict[str, str]) -> None:
    home = Path(stack_env["CAREFLOW_HOME"])
    try:
        first = careflow(stack_env, "dev", "up", "--workers", "2")
        assert first.returncode == 0, first.stdout + first.stderr
        out = first.stdout
        assert "platform canary: healthy" in out
        ui = f"http://127.0.0.1:{stack_env['CAREFLOW_TEMPORAL_UI_PORT']}"
        assert f"{ui}/namespaces/careflow/workflows" in out
        assert (home / "stack.env").exists()
        env_file = (home / "stack.env").read_text()
        for var in (
            "TEMPORAL_ADDRESS",
            "TEMPORAL_NAMESPACE",
            "CAREFLOW_DATABASE_URL",
            "CAREFLOW_API_URL",
            "CAREFLOW_TEMPORAL_UI_URL",
        ):
            assert f"{var}=" in env_file
        assert oct((home / "stack.env").stat().st_mode & 0o777) == "0o600"
        # The Web UI decodes through careflow's codec, and the token is in no process's argv (`ps`).
        codec = httpx.get(f"{ui}/api/v1/settings", timeout=10).json()["Codec"]["Endpoint"]
        token = codec.rsplit("/t/", 1)[1]
        assert codec.startswith(f"http://127.0.0.1:{stack_env['CAREFLOW_API_PORT']}/codec/t/") and token
        assert not [p.pid for p in processes_of(home) if token in " ".join(p.cmdline())]
        assert oct((home / "run" / "temporal-env.yaml").stat().st_mode & 0o777) == "0o600"
        pids = recorded_pids(home)
        assert {
            "temporal",
            "api",
            "hl7",
            "postgres",
            "worker-careflow-main-0",
            "worker-careflow-main-1",
        } <= set(pids)
        # each worker serves the SDK's Prometheus metrics on base + k
        base = int(stack_env["CAREFLOW_WORKER_METRICS_PORT_BASE"])
        metrics = [httpx.get(f"http://127.0.0.1:{base + k}/metrics", timeout=5).text for k in (0, 1)]
        assert all("temporal_" in m for m in metrics)
        assert any('activity_type="platform.probe"' in m for m in metrics)

        # make run's main job: synthetic patients, a critical result over MLLP, the physician alerted
        seeded = careflow(stack_env, "seed", "ehr", "--patients", "3", "--seed", "7")
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        demo = careflow(stack_env, "demo", "lab-alert", "--seed", "7", "--patients", "3")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "MSA|AA|" in demo.stdout and "Lab alert: alerted (critical)" in demo.stdout
        alert_id = next(w for w in demo.stdout.split() if w.startswith("lab-alert-"))
        acked = careflow(stack_env, "alerts", "ack", alert_id, "--by", "dr-test")
        assert acked.returncode == 0 and "acknowledged by dr-test" in acked.stdout, (
            acked.stdout + acked.stderr
        )

        second = careflow(stack_env, "dev", "up")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "started" not in second.stdout.replace("platform canary", "")
        assert second.stdout.count("already running") == len(pids)
        assert recorded_pids(home) == pids
        # Every Schedule the pipelines declare: created by the first `up`, brought up to date by the next.
        n = len(pipelines.schedules())
        assert f"temporal: {n} schedules ({n} created, 0 updated)" in out
        assert f"temporal: {n} schedules (0 created, {n} updated)" in second.stdout

        # The DR site: a hot standby cloned from the primary, streaming (dev status shows its lag).
        standby = careflow(stack_env, "dev", "up", "--standby", "--no-check")
        assert standby.returncode == 0, standby.stdout + standby.stderr
        assert "postgres-standby: cloned from the primary" in standby.stdout
        assert "postgres-standby: streaming (async), " in standby.stdout

        status = careflow(stack_env, "dev", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "down" not in status.stdout and "platform canary: healthy" in status.stdout
        assert "postgres-standby" in status.stdout and "streaming (async)" in status.stdout

        # Workflows survive a restart: the dev server keeps its SQLite file.
        env = dict(
            stack_env,
            **{
                k: v.strip("'")
                for k, v in (
                    line.split("=", 1)
                    for line in env_file.splitlines()
                    if "=" in line and not line.startswith("#")
                )
            },
        )
        listed = temporal_cli(env, "workflow", "list", "-o", "json")
        before = {w["execution"]["workflowId"] for w in json.loads(listed.stdout)}
        assert before
        down = careflow(stack_env, "dev", "down")
        assert down.returncode == 0, down.stderr
        assert careflow(stack_env, "dev", "up", "--no-check").returncode == 0
        relisted = temporal_cli(env, "workflow", "list", "-o", "json")
        assert before <= {w["execution"]["workflowId"] for w in json.loads(relisted.stdout)}
        golden = temporal_cli(
            env, "schedule", "describe", "-s", "golden-evaluation-daily-rag_answer", "-o", "json"
        )
        assert golden.returncode == 0 and "GoldenEvaluationWorkflow" in golden.stdout, golden.stderr

        # Durable under kill -9 (SQLite in WAL mode, synchronous FULL): a start the server has
        # acknowledged is there after the server is killed without warning and started again.
        durable = f"durability-{uuid.uuid4().hex[:8]}"
        started = temporal_cli(
            env, "workflow", "start", "--type", "NoSuchWorkflow", "--task-queue", "nobody", "-w", durable
        )
        assert started.returncode == 0, started.stderr
        os.killpg(recorded_pids(home)["temporal"], signal.SIGKILL)
        assert careflow(stack_env, "dev", "up", "--no-check").returncode == 0
        described = temporal_cli(env, "workflow", "describe", "-w", durable, "-o", "json")
        assert described.returncode == 0, described.stderr
        assert (
            json.loads(described.stdout)["workflowExecutionInfo"]["status"]
            == "WORKFLOW_EXECUTION_STATUS_RUNNING"
        )
        temporal_cli(env, "workflow", "terminate", "-w", durable, "--reason", "test")

        # A stack whose queue nobody polls is not healthy: it would accept work and never do it.
        assert careflow(stack_env, "dev", "up", "--workers", "0", "--no-check").returncode == 0
        idle = careflow(stack_env, "dev", "status", "--no-canary")
        assert idle.returncode == 1, idle.stdout
        assert "careflow dev up --workers 1" in idle.stdout
        assert careflow(stack_env, "dev", "up", "--workers", "1", "--no-check").returncode == 0
        # Healthy again once the new worker polls; the terminated run is named as failed in the last day.
        deadline = time.monotonic() + 60
        while (back := careflow(stack_env, "dev", "status", "--no-canary")).returncode != 0:
            assert time.monotonic() < deadline, back.stdout
            time.sleep(1)
        assert "in the last 24 h: 1" in back.stdout and durable in back.stdout, back.stdout

        pids = recorded_pids(home)
        down = careflow(stack_env, "dev", "down")
        assert down.returncode == 0, down.stderr
        for name, pid in pids.items():
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, name
        assert processes_of(home) == []
        status = careflow(stack_env, "dev", "status", "--no-canary")
        assert status.returncode == 1
    finally:
        careflow(stack_env, "dev", "down", "--purge")
    assert not home.exists() and not embedded_pg(home).data_dir.exists()
