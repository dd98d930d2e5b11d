"""KnowledgeBaseRefreshWorkflow on the Temporal dev server with a real worker running KbActivities
against the session Postgres (real MiniLM embeddings): progress query, rejected documents reported,
an idempotent second run, an update that swaps one document and invalidates its cache entries, the
`careflow kb ingest` progress bar and summary, and the nightly schedule."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleSpec,
)
from temporalio.worker import Worker

from activities.kb import KbActivities
from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.kb import store
from careflow.kb.cache import SemanticCache
from careflow.kb.embed import get_embedder
from careflow.models.kb_refresh import KbProgress, KbRefreshInput
from starters.clients.history import export_history
from starters.clients.kb import ensure_refresh_schedule, ingest_workflow_id, schedule_id, start_ingest
from tests.fixtures.kb import EXPECTED, build_folder
from tests.support.wait import wait_until
from workers.registry import sandbox_runner
from workflows.kb_refresh import KnowledgeBaseRefreshWorkflow

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = Path(__file__).resolve().parents[1] / "histories"
HYPERK = "hyperkalemia-protocol.txt"


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings)
    yield p
    await p.close()


@pytest_asyncio.fixture
async def worker(client: Client, pool: asyncpg.Pool, task_queue: str) -> AsyncIterator[Worker]:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[KnowledgeBaseRefreshWorkflow],
        activities=KbActivities(pool).all(),
        workflow_runner=sandbox_runner(),
    ) as w:
        yield w


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    src = build_folder(tmp_path / "kb")
    (src / "no-header.md").write_text("## 1 Scope\n\nText without a header block.\n")
    return src


async def run_with_progress(client: Client, t: str, folder: Path, task_queue: str) -> tuple[KbProgress, list]:
    handle = await start_ingest(client, t, str(folder), batch_size=2, task_queue=task_queue)
    assert handle.id == ingest_workflow_id(t, str(folder))
    result = asyncio.ensure_future(handle.result())
    seen: list[KbProgress] = []
    while not result.done():
        seen.append(await handle.query(KnowledgeBaseRefreshWorkflow.progress))
        await asyncio.wait({result}, timeout=0.05)
    final = result.result()
    assert await handle.query(KnowledgeBaseRefreshWorkflow.progress) == final
    return final, seen


async def refresh(client: Client, t: str, folder: Path, task_queue: str) -> KbProgress:
    """One refresh of the folder, to its result."""
    return await (await start_ingest(client, t, str(folder), batch_size=2, task_queue=task_queue)).result()


async def rows(pool: asyncpg.Pool, t: str) -> dict[str, str]:
    found = await pool.fetch("SELECT chunk_id, xmin::text AS x FROM kb_chunks WHERE tenant_id = $1", t)
    return {r["chunk_id"]: r["x"] for r in found}


@pytest.mark.usefixtures("worker")
async def test_refresh_progress_idempotent_rerun_and_update(
    client: Client, pool: asyncpg.Pool, folder: Path, task_queue: str
) -> None:
    t = tenant()
    first, seen = await run_with_progress(client, t, folder, task_queue)
    stored = await rows(pool, t)
    assert first.stage == "done"
    assert (first.documents_total, first.documents_done) == (len(EXPECTED) + 1, len(EXPECTED) + 1)
    assert (first.documents_inserted, first.documents_replaced) == (len(EXPECTED), 0)
    assert first.chunks_written == len(stored) > 0 and first.chunks_unchanged == 0
    [rejected] = first.rejected
    assert rejected.file == "no-header.md" and rejected.chunk_id is None
    assert rejected.reason.startswith("missing header field(s): Document-Id")
    done = [p.documents_done for p in seen]
    assert done == sorted(done) and all(
        p.documents_done <= p.documents_total for p in seen if p.documents_total
    )
    assert {p.stage for p in seen} <= {"planning", "ingesting", "retiring", "publishing", "done"}
    assert first.documents_retired == []

    second, _ = await run_with_progress(client, t, folder, task_queue)
    assert (second.documents_inserted, second.documents_replaced, second.chunks_written) == (0, 0, 0)
    assert second.chunks_unchanged == first.chunks_written
    assert second.documents_done == second.documents_total == len(EXPECTED) + 1
    assert [r.file for r in second.rejected] == ["no-header.md"]
    assert await rows(pool, t) == stored  # nothing rewritten

    cache, vector = SemanticCache(pool), get_embedder().encode_one("insulin in hyperkalaemia")
    entry = await cache.store(
        t, "insulin dose in hyperkalaemia?", vector, {"a": 1}, ["hyperkalemia-acute"], []
    )
    path = folder / HYPERK
    path.write_text(path.read_text().replace("Version: 2", "Version: 3").replace("10 units", "5 units"))
    third, _ = await run_with_progress(client, t, folder, task_queue)
    assert (third.documents_inserted, third.documents_replaced) == (0, 1)
    assert third.cache_entries_invalidated == 1
    assert await pool.fetchval("SELECT invalidated_at IS NOT NULL FROM kb_answer_cache WHERE id = $1", entry)
    after = await rows(pool, t)
    assert {c for c in after if c.startswith("hyperkalemia-acute@")} == {
        c.replace("@v2#", "@v3#") for c in stored if c.startswith("hyperkalemia-acute@")
    }
    others = {c: x for c, x in stored.items() if not c.startswith("hyperkalemia-acute@")}
    assert {c: after[c] for c in others} == others
    assert third.chunks_written == len(after) - len(others)


async def search_ids(pool: asyncpg.Pool, t: str, question: str) -> set[str]:
    found = await store.search(pool, t, get_embedder().encode_one(question), k=20)
    return {c.document_id for c in found}


@pytest.mark.usefixtures("worker")
async def test_a_removed_source_is_retired_with_its_cache_entries(
    client: Client, pool: asyncpg.Pool, folder: Path, task_queue: str
) -> None:
    t = tenant()
    await run_with_progress(client, t, folder, task_queue)
    assert "hyperkalemia-acute" in await search_ids(pool, t, "insulin dose for hyperkalaemia")
    entry = await SemanticCache(pool).store(
        t,
        "insulin dose in hyperkalaemia?",
        get_embedder().encode_one("insulin"),
        {"a": 1},
        ["hyperkalemia-acute"],
        [],
    )
    # A rename with the same content is not a removal.
    (folder / "cap-outpatient.md").rename(folder / "cap-outpatient-renamed.md")
    (folder / HYPERK).unlink()

    handle = await start_ingest(client, t, str(folder), batch_size=2, task_queue=task_queue)
    after = await handle.result()
    assert after.documents_retired == ["hyperkalemia-acute"]
    assert "hyperkalemia-acute" not in await search_ids(pool, t, "insulin dose for hyperkalaemia")
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM kb_chunks WHERE tenant_id = $1 AND document_id = $2",
            t,
            "hyperkalemia-acute",
        )
        == 0
    )
    remaining = {d.document_id for d in await store.stored_documents(pool, t)}
    assert remaining == {e[0] for e in EXPECTED.values()} - {"hyperkalemia-acute"}  # the renamed one stays
    retired = await pool.fetchrow("SELECT * FROM kb_retired_documents WHERE tenant_id = $1", t)
    assert (retired["document_id"], retired["version"], retired["source_file"]) == (
        "hyperkalemia-acute",
        "2",
        HYPERK,
    )
    assert retired["reason"] == "source file removed" and retired["chunk_count"] > 0
    assert await pool.fetchval("SELECT invalidated_at IS NOT NULL FROM kb_answer_cache WHERE id = $1", entry)
    assert after.cache_entries_invalidated == 1
    if os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1":
        written = await export_history(client, handle.id, HISTORIES)
        written.replace(HISTORIES / "KnowledgeBaseRefreshWorkflow-retired.json")

    # The source comes back: it is ingested again like any new document.
    build_folder(folder)
    (folder / "cap-outpatient.md").unlink()
    back = await refresh(client, t, folder, task_queue)
    assert back.documents_inserted == 1 and back.documents_retired == []
    assert "hyperkalemia-acute" in await search_ids(pool, t, "insulin dose for hyperkalaemia")


@pytest.mark.usefixtures("worker")
async def test_documents_from_before_folders_were_recorded_are_adopted_not_retired(
    client: Client, pool: asyncpg.Pool, folder: Path, task_queue: str
) -> None:
    t = tenant()
    await run_with_progress(client, t, folder, task_queue)
    await pool.execute("UPDATE kb_documents SET source_root = NULL WHERE tenant_id = $1", t)  # as before 0013
    (folder / HYPERK).unlink()
    result = await refresh(client, t, folder, task_queue)
    # The folder it came from is unknown: a missing source retires nothing; present ones are adopted.
    assert result.documents_retired == []
    roots = dict(
        await pool.fetch("SELECT document_id, source_root FROM kb_documents WHERE tenant_id = $1", t)
    )
    assert roots.pop("hyperkalemia-acute") is None
    assert set(roots.values()) == {str(folder.resolve())}


@pytest.mark.usefixtures("worker")
async def test_an_emptied_folder_retires_nothing(
    client: Client, pool: asyncpg.Pool, folder: Path, task_queue: str
) -> None:
    t = tenant()
    await run_with_progress(client, t, folder, task_queue)
    for path in folder.iterdir():
        if path.is_file():
            path.unlink()
    result = await refresh(client, t, folder, task_queue)
    assert result.documents_total == 0 and result.documents_retired == []
    assert len(await store.stored_documents(pool, t)) == len(EXPECTED)


@pytest.mark.usefixtures("worker")
async def test_documents_embedded_by_another_model_are_embedded_again(
    client: Client, pool: asyncpg.Pool, folder: Path, task_queue: str
) -> None:
    t = tenant()
    await run_with_progress(client, t, folder, task_queue)
    await pool.execute(
        "UPDATE kb_documents SET embedding_model = 'an-older-model'"
        " WHERE tenant_id = $1 AND document_id = $2",
        t,
        "formulary-vancomycin",
    )
    again = await refresh(client, t, folder, task_queue)
    assert (again.documents_inserted, again.documents_replaced) == (0, 1)
    # none of the old model's vectors is reused: every chunk of the document is embedded again
    stored = {d.document_id: d for d in await store.stored_documents(pool, t)}
    assert stored["formulary-vancomycin"].current
    assert again.chunks_written == stored["formulary-vancomycin"].chunk_count > 0


@pytest.mark.usefixtures("worker")
async def test_cli_ingest_shows_progress_and_summary_then_stats(folder: Path, task_queue: str) -> None:
    t = tenant()

    async def careflow(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "starters", *args,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 180)
        assert proc.returncode == 0, out.decode()
        return out.decode()

    out = await careflow(
        "kb", "ingest", str(folder), "--tenant", t, "--task-queue", task_queue, "--batch-size", "2"
    )
    assert f"workflow {ingest_workflow_id(t, str(folder.resolve()))}" in out
    assert "done" in out and f"{len(EXPECTED) + 1}/{len(EXPECTED) + 1}" in out  # the finished progress bar
    assert "rejected no-header.md" in out and "missing header field(s)" in out
    summary = next(line for line in out.splitlines() if line.strip().startswith("│ 6"))
    assert [cell.strip() for cell in summary.strip("│ ").split("│")][:4] == ["6", "5", "0", "0"]
    stats = await careflow("kb", "stats", "--tenant", t)
    assert "protocol" in stats and "payer_policy" in stats and "formulary" in stats
    assert any(line.split("│")[1:3] and "total" in line for line in stats.splitlines())


@pytest.mark.usefixtures("worker")
async def test_nightly_schedule_created_updated_and_runs(
    client: Client, folder: Path, task_queue: str
) -> None:
    t = tenant()
    assert (
        await ensure_refresh_schedule(client, t, str(folder), "0 2 * * *", task_queue=task_queue) == "created"
    )
    handle = client.get_schedule_handle(schedule_id(t))
    try:
        desc = await handle.describe()
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.id, action.task_queue) == (
            "KnowledgeBaseRefreshWorkflow",
            f"kb-refresh-{t}",
            task_queue,
        )
        [arg] = await client.data_converter.decode(action.args, [KbRefreshInput])
        assert arg == KbRefreshInput(tenant_id=t, source=str(folder), batch_size=16)
        assert fires_at(desc.schedule.spec) == ["0 2 * * *"]

        updated = await ensure_refresh_schedule(
            client, t, str(folder), "30 3 * * *", 4, task_queue=task_queue
        )
        assert updated == "updated"
        desc = await handle.describe()
        assert fires_at(desc.schedule.spec) == ["30 3 * * *"]
        assert isinstance(desc.schedule.action, ScheduleActionStartWorkflow)
        [arg] = await client.data_converter.decode(desc.schedule.action.args, [KbRefreshInput])
        assert arg.batch_size == 4

        await handle.trigger()  # what 03:30 would do
        desc = await wait_until(
            lambda: _with_recent_action(handle), timeout=30, what="the scheduled refresh to start"
        )
        started = desc.info.recent_actions[0].action
        assert started.workflow_id.startswith(f"kb-refresh-{t}")
        result = await client.get_workflow_handle(started.workflow_id, result_type=KbProgress).result()
        assert result.stage == "done" and result.documents_inserted == len(EXPECTED)
    finally:
        await handle.delete()


def fires_at(spec: ScheduleSpec) -> list[str]:
    """The schedule's times as cron lines (the server may hand a cron back as calendar specs)."""
    calendars = [f"{c.minute[0].start} {c.hour[0].start} * * *" for c in spec.calendars]
    return list(spec.cron_expressions) or calendars


async def _with_recent_action(handle: ScheduleHandle) -> ScheduleDescription | None:
    desc = await handle.describe()
    return desc if desc.info.recent_actions else None
