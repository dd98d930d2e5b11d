"""The HIPAA audit trail on the session's real Postgres: hash chain, append-only, concurrent writers,
idempotent activity, CLI verify/export.  Each test gets its own freshly migrated database, because
the chain is per database and some tests tamper with it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.audit import AuditActivities, RecordAuditInput
from careflow.audit.export import export_since
from careflow.audit.trail import PostgresAuditTrail, verify
from careflow.db.embedded import EmbeddedPostgres
from careflow.db.migrate import migrate
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType, AuditOutcome

ROOT = Path(__file__).resolve().parents[2]


class AuditDb:
    def __init__(self, superuser_dsn: str) -> None:
        self.dsn = superuser_dsn
        # The application role; the embedded server trusts 127.0.0.1.
        self.app_dsn = superuser_dsn.replace("://postgres@", "://careflow_app@")


@pytest_asyncio.fixture
async def audit_db(postgres: EmbeddedPostgres) -> AuditDb:
    dsn = await postgres.ensure_database(f"audit_{uuid.uuid4().hex[:10]}")
    await migrate(dsn)
    return AuditDb(dsn)


@pytest_asyncio.fixture
async def app_pool(audit_db: AuditDb) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(audit_db.app_dsn, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


def event(i: int, **overrides: object) -> AuditEvent:
    fields: dict[str, object] = {
        "event_type": AuditEventType.PHI_ACCESS,
        "actor": "svc-worker-1",
        "action": AuditAction.READ,
        "patient_id": f"pat-{i % 3}",
        "resource_type": "Observation",
        "resource_id": f"obs-{i}",
        "request_id": f"req-{i}",
        "workflow_id": "lab-alert-r1",
        "detail": {"query": "code,date", "n": str(i)},
    }
    fields.update(overrides)
    return AuditEvent.model_validate(fields)


async def fill(pool: asyncpg.Pool, n: int) -> None:
    trail = PostgresAuditTrail(pool)
    for i in range(n):
        await trail.record(event(i))


async def test_chain_of_every_event_type_verifies(app_pool: asyncpg.Pool) -> None:
    trail = PostgresAuditTrail(app_pool)
    for kind, action in [
        (AuditEventType.PHI_ACCESS, AuditAction.READ),
        (AuditEventType.PHI_WRITE, AuditAction.CREATE),
        (AuditEventType.AI_INFERENCE, AuditAction.EXECUTE),
        (AuditEventType.REVIEWER_ACTION, AuditAction.UPDATE),
    ]:
        await trail.record(event(1, event_type=kind, action=action, detail={"é": "ü"}))
    # A naive timestamp is taken as UTC and still verifies after the round trip through timestamptz.
    await trail.record(event(2, occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678901)))
    result = await verify(app_pool)
    assert (result.ok, result.rows_checked, result.first_broken_id) == (True, 5, None)
    last = await app_pool.fetchval("SELECT row_hash FROM audit_events ORDER BY id DESC LIMIT 1")
    assert result.head_hash == last
    # small batches walk the same chain
    assert (await verify(app_pool, batch=2)).ok


def _flip_first_hex(column: str) -> str:
    """SQL that always changes the first hex digit (overlaying a fixed digit is a no-op 1 time in 16)."""
    return (
        f"{column} = overlay({column} placing "
        f"(CASE WHEN left({column}, 1) = 'a' THEN 'b' ELSE 'a' END) from 1 for 1)"
    )


# column -> SQL that flips one byte of that column of one row
TAMPERS = {
    "actor": "actor = 'svc-worker-2'",
    "patient_id": "patient_id = 'pat-9'",
    "action": "action = 'C'",
    "detail": """detail = '{"query": "code,dat3", "n": "6"}'""",
    "occurred_at": "occurred_at = occurred_at + interval '1 microsecond'",
    "request_id": "request_id = NULL",
    "prev_hash": _flip_first_hex("prev_hash"),
    "row_hash": _flip_first_hex("row_hash"),
}


@pytest.mark.parametrize("column", list(TAMPERS))
async def test_flipped_byte_is_detected_at_that_row(
    audit_db: AuditDb, app_pool: asyncpg.Pool, column: str
) -> None:
    await fill(app_pool, 10)
    assert (await verify(app_pool)).ok
    su = await asyncpg.connect(audit_db.dsn)
    try:
        target = await su.fetchval("SELECT id FROM audit_events ORDER BY id OFFSET 6 LIMIT 1")
        # What an attacker with superuser rights does: switch the append-only trigger off.
        await su.execute("SET session_replication_role = replica")
        tamper = f"UPDATE audit_events SET {TAMPERS[column]} WHERE id = $1"  # noqa: S608
        assert await su.execute(tamper, target) == "UPDATE 1"
    finally:
        await su.close()
    result = await verify(app_pool)
    assert not result.ok
    assert result.first_broken_id == target
    assert result.rows_checked == 7
    assert result.reason


async def test_app_role_cannot_update_delete_or_truncate(audit_db: AuditDb, app_pool: asyncpg.Pool) -> None:
    await fill(app_pool, 3)
    conn = await asyncpg.connect(audit_db.app_dsn)
    try:
        assert await conn.fetchval("SELECT current_user") == "careflow_app"
        for sql in (
            "UPDATE audit_events SET actor = 'x'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await conn.execute(sql)
    finally:
        await conn.close()
    assert (await verify(app_pool)).rows_checked == 3


async def test_trigger_blocks_even_the_superuser(audit_db: AuditDb, app_pool: asyncpg.Pool) -> None:
    await fill(app_pool, 3)
    su = await asyncpg.connect(audit_db.dsn)
    try:
        assert await su.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        for sql in (
            "UPDATE audit_events SET actor = 'x'",
            "DELETE FROM audit_events WHERE id = 1",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await su.execute(sql)
        assert await su.fetchval("SELECT count(*) FROM audit_events") == 3
    finally:
        await su.close()


async def test_four_writer_processes_keep_one_chain(audit_db: AuditDb, app_pool: asyncpg.Pool) -> None:
    per_writer = 150
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.audit_writer",
            audit_db.app_dsn,
            str(per_writer),
            f"w{k}",
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in range(4)
    ]
    for p in procs:  # every writer is connected before any of them appends
        assert p.stdout is not None
        assert await asyncio.wait_for(p.stdout.readline(), 60) == b"READY\n"
    outs = await asyncio.gather(*(p.communicate(b"go\n") for p in procs))
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert [int(o[0]) for o in outs] == [per_writer] * 4
    result = await verify(app_pool)
    assert (result.ok, result.rows_checked) == (True, 4 * per_writer)
    per_actor = dict(await app_pool.fetch("SELECT actor, count(*) FROM audit_events GROUP BY actor"))
    assert per_actor == {f"worker-w{k}": per_writer for k in range(4)}
    # the writers really interleaved: the chain alternates between processes
    actors = [r["actor"] for r in await app_pool.fetch("SELECT actor FROM audit_events ORDER BY id")]
    assert sum(a != b for a, b in itertools.pairwise(actors)) > 4


async def test_retried_record_activity_appends_once(app_pool: asyncpg.Pool) -> None:
    activities = AuditActivities(app_pool)
    env = ActivityEnvironment()
    rejected = RecordAuditInput(
        event=event(
            1,
            event_type=AuditEventType.REVIEWER_ACTION,
            actor="dr-reviewer-7",
            actor_type="user",
            action=AuditAction.UPDATE,
            outcome=AuditOutcome.REJECTED,
            workflow_id="prior-auth-ord-42",
            detail={"reason": "draft-not-ready"},
        ),
        step="review-1-rejected",
    )
    first = await env.run(activities.record, rejected)
    await fill(app_pool, 2)  # other events in between
    retry = await env.run(activities.record, rejected.model_copy(deep=True))
    assert first.inserted and not retry.inserted
    assert retry.event_id == first.event_id
    next_step = await env.run(activities.record, rejected.model_copy(update={"step": "review-2-rejected"}))
    assert next_step.inserted
    keys = [r["event_key"] for r in await app_pool.fetch("SELECT event_key FROM audit_events ORDER BY id")]
    assert keys == ["prior-auth-ord-42/review-1-rejected", None, None, "prior-auth-ord-42/review-2-rejected"]
    assert (await verify(app_pool)).ok

    no_workflow = RecordAuditInput(event=event(1, workflow_id=None), step="s")
    with pytest.raises(ApplicationError) as err:
        await env.run(activities.record, no_workflow)
    assert err.value.non_retryable


async def test_export_gives_valid_balp_audit_events(app_pool: asyncpg.Pool) -> None:
    trail = PostgresAuditTrail(app_pool)
    old = datetime.now(UTC) - timedelta(days=30)
    await trail.record(event(0, occurred_at=old))
    await trail.record(event(1, resource_type="Patient", resource_id="pat-1"))
    await trail.record(event(2, event_type=AuditEventType.AI_INFERENCE, action=AuditAction.EXECUTE))
    await trail.record(event(3, event_type=AuditEventType.PHI_WRITE, action=AuditAction.CREATE))
    await trail.record(event(4, patient_id=None, resource_type="Practitioner", resource_id="pr-1"))
    since = datetime.now(UTC) - timedelta(days=1)
    exported = [e async for e in export_since(app_pool, since)]
    assert len(exported) == 4  # the 30-day-old event is before --since
    for resource in exported:
        FhirAuditEvent.model_validate(resource)
    patient_read, inference, write, practitioner_read = exported
    # BALP PatientRead: exactly one patient entity (the Patient itself is not repeated as data)
    assert patient_read["subtype"][0]["code"] == "read"
    assert [
        e["what"]["reference"] for e in patient_read["entity"] if e.get("role", {}).get("code") == "1"
    ] == ["Patient/pat-1"]
    assert [e for e in patient_read["entity"] if e.get("role", {}).get("code") == "4"] == []
    assert inference["subtype"][0]["code"] == "ai-inference"
    request_ids = [e["what"]["identifier"]["value"] for e in inference["entity"] if "identifier" in e["what"]]
    assert request_ids == ["req-2"]
    assert write["action"] == "C" and write["subtype"][0]["code"] == "create"
    assert all(e.get("role", {}).get("code") != "1" for e in practitioner_read["entity"])


def run_cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CAREFLOW_DATABASE_URL=dsn)
    return subprocess.run(
        [sys.executable, "-m", "starters", "audit", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_verify_names_broken_row_and_export_writes_ndjson(
    audit_db: AuditDb, app_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    await fill(app_pool, 5)
    ok = await asyncio.to_thread(run_cli, "verify", dsn=audit_db.app_dsn)
    assert ok.returncode == 0, ok.stderr
    assert "5 rows verified" in ok.stderr

    out = tmp_path / "audit.ndjson"
    exported = await asyncio.to_thread(
        run_cli, "export", "--since", "2000-01-01", "--out", str(out), dsn=audit_db.app_dsn
    )
    assert exported.returncode == 0, exported.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    assert all(FhirAuditEvent.model_validate(json.loads(line)).id for line in lines)

    su = await asyncpg.connect(audit_db.dsn)
    try:
        await su.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
        target = await su.fetchval("SELECT id FROM audit_events ORDER BY id OFFSET 2 LIMIT 1")
        await su.execute("UPDATE audit_events SET resource_id = 'obs-X' WHERE id = $1", target)
    finally:
        await su.close()
    broken = await asyncio.to_thread(run_cli, "verify", dsn=audit_db.app_dsn)
    assert broken.returncode == 1
    assert f"BROKEN at row id {target}" in broken.stderr


async def test_worker_registry_serves_audit_record(app_pool: asyncpg.Pool) -> None:
    from careflow import task_queues
    from careflow.config import Settings
    from workers.registry import ProcessClients, activities_for

    clients = ProcessClients(settings=Settings(), pool=app_pool, codec=None, identity="test-worker")
    names = [fn.__temporal_activity_definition.name for fn in activities_for(task_queues.MAIN, clients)]  # type: ignore[attr-defined]
    assert "audit.record" in names
