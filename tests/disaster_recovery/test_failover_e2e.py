"""A real failover on the dev server: a primary and its synchronous standby (two embedded clusters
under a stack home of the test's own), the primary killed with SIGKILL, DRFailoverWorkflow with its
real activities fencing it, promoting the standby and moving a careflow pool over without a restart;
the audit chain, the golden RAG questions and the platform canary verified on the new primary, every
step in the audit trail, the recovery measured."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime

import pytest
from temporalio.client import Client

from careflow.audit import trail
from careflow.db import endpoint
from careflow.db.embedded import EmbeddedPostgresError
from careflow.dr import sites
from careflow.kb import ingest
from careflow.kb.evaluation import load_golden
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType
from careflow.models.dr import FailoverInput, FailoverStage
from starters.clients import dr as client_of
from tests.disaster_recovery.conftest import Pair
from tests.support.kb import STARTER

pytestmark = pytest.mark.stack  # starts servers of its own


async def test_the_primary_killed_the_standby_takes_over_with_nothing_lost_and_every_step_audited(
    client: Client, pair: Pair
) -> None:
    # A knowledge base and the live recall the last drill measured: the new primary must answer the
    # golden questions as well.
    await ingest.ingest_files(pair.pool, "default", STARTER, [s.name for s in ingest.discover(STARTER)])
    await pair.pool.execute(
        """INSERT INTO dr_drills (drill_id, requested_by, outcome, checks)
           VALUES ('drill-before', 'dr-test', 'passed', '{"live_recall": 0.95}')"""
    )
    audit = trail.PostgresAuditTrail(pair.pool)
    for i in range(20):  # committed on the primary: a synchronous standby has each before the commit returns
        await audit.append(AuditEvent(event_type=AuditEventType.PHI_ACCESS, actor=f"dr-test-{i}",
                                      action=AuditAction.READ, resource_type="Patient"))  # fmt: skip
    before = await pair.pool.fetchval("SELECT count(*) FROM audit_events")

    pid = pair.primary.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the primary's host gone, without a word
    detected = datetime.now(UTC)
    incident = f"e2e-{uuid.uuid4().hex[:8]}"
    inp = FailoverInput(
        incident=incident, requested_by="dr-ops", reason="primary killed", detected_at=detected,
        automatic=True, search_attributes=False, canary_queues=[pair.task_queue],
    )  # fmt: skip
    started = await client_of.start(client, inp, task_queue=pair.task_queue)
    done = await client_of.result(client, started.workflow_id)

    assert done.stage is FailoverStage.FAILED_OVER, done.reason
    assert done.assessment is not None and not done.assessment.primary.up and done.assessment.synchronous
    assert done.verified is not None and done.verified.audit_ok and done.verified.audit_rows >= before
    v = done.verified
    assert v.golden_questions == len(load_golden()) and v.golden_baseline == 0.95
    assert v.golden_recall is not None and v.golden_recall >= 0.95 - 0.05
    assert v.canary_healthy and v.canary_unreachable == {}  # the pair's worker writes through the new primary
    standby_url = sites.urls(pair.settings)[0]
    assert endpoint.active(pair.settings).reason == incident and sites.redacted(standby_url).endswith(
        f":{pair.settings.standby_port}/careflow"
    )
    # Split brain ruled out: the old primary stays down and refuses to start.
    assert not pair.primary.is_running() and pair.primary.fence_file.exists()
    with pytest.raises(EmbeddedPostgresError, match="fenced by a failover"):
        await asyncio.to_thread(pair.primary.start)

    # The same pool, no restart, on the new primary: nothing committed before the crash is missing.
    assert await pair.pool.fetchval("SELECT count(*) FROM audit_events WHERE event_type = 'phi-access'") == 20
    assert await pair.pool.fetchval("SELECT current_setting('port')::int") == pair.settings.standby_port
    steps = await pair.pool.fetch(
        "SELECT detail->>'step' AS step FROM audit_events WHERE workflow_id = $1 ORDER BY id",
        started.workflow_id,
    )
    assert [r["step"] for r in steps] == [
        "assessing", "fencing", "promoting", "switching", "verifying", "failed-over",
    ]  # fmt: skip
    assert (await trail.verify(pair.pool)).ok
    row = await pair.pool.fetchrow("SELECT * FROM dr_failovers WHERE incident = $1", incident)
    assert row is not None and row["outcome"] == "failed-over" and row["first_write_at"] > detected
    lab = next(r for r in done.recovery if r.feature == "lab-alerts")
    assert lab.rpo == "0 (synchronous)" and lab.met and 0 < lab.rto_s < 300
    print(f"\nmeasured: RTO {lab.rto_s:.2f} s from the kill to the first write on the new primary (RPO 0)")

    # Asked again for another incident, the new primary answers: nothing to fail over.
    again = await client_of.start(
        client, inp.model_copy(update={"incident": incident + "-b"}), pair.task_queue
    )
    after = await client_of.result(client, again.workflow_id)
    assert after.stage is FailoverStage.NOTHING_FAILED
