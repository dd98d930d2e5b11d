"""The DR tests' sites: a single archiving Postgres for backups and drills (`site`), and a primary with
its synchronous standby under a stack home of the test's own, a worker running the failover, failback
and monitor workflows and the platform canary with their real activities (`pair`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from activities.dr import DrActivities
from activities.platform import PlatformActivities
from careflow.config import Settings
from careflow.db import replication
from careflow.db.embedded import EmbeddedPostgres
from careflow.db.migrate import migrate
from careflow.db.pool import create_pool
from careflow.dr import sites
from careflow.net import free_port
from careflow.notify.notifier import Notifier
from tests.support.dr_site import Site, dr_site
from workers.registry import sandbox_runner
from workflows.dr_failback import DRFailbackWorkflow
from workflows.dr_failover import DRFailoverWorkflow
from workflows.dr_monitor import DRMonitorWorkflow
from workflows.platform_canary import PlatformCanaryWorkflow


@pytest_asyncio.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with dr_site(tmp_path) as s:
        yield s


@dataclass
class Pair:
    settings: Settings
    primary: EmbeddedPostgres
    standby: EmbeddedPostgres
    pool: asyncpg.Pool
    task_queue: str


@pytest_asyncio.fixture
async def pair(client: Client, task_queue: str, tmp_path: Path) -> AsyncIterator[Pair]:
    settings = Settings(
        home=tmp_path / "home", database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/careflow",
        standby_port=free_port(), standby_synchronous=True,
    )  # fmt: skip
    primary_url, standby_url = sites.urls(settings)
    primary, standby = sites.cluster(settings, primary_url), sites.cluster(settings, standby_url)
    primary.options = replication.archive_options(primary)
    pool: asyncpg.Pool | None = None
    try:
        await asyncio.to_thread(primary.start)
        await primary.ensure_database("careflow")
        await migrate(settings.database_url)
        await replication.make_standby(primary, standby, synchronous=True)
        pool = await create_pool(settings)
        acts = DrActivities(settings, pool, Notifier(pool, None))
        probe = PlatformActivities(pool, client.data_converter.payload_codec, "dr-pair").probe
        async with Worker(
            client, task_queue=task_queue,
            workflows=[DRFailoverWorkflow, DRFailbackWorkflow, DRMonitorWorkflow, PlatformCanaryWorkflow],
            activities=[*acts.all(), probe], workflow_runner=sandbox_runner(),
        ):  # fmt: skip
            yield Pair(settings, primary, standby, pool, task_queue)
    finally:
        if pool is not None:
            await pool.close()
        await asyncio.to_thread(standby.remove)
        await asyncio.to_thread(primary.remove)
