"""A real failback on the dev server, after a real failover: the fenced old primary rebuilt as a
synchronous standby of the new one (cloned anew), then, on the operator's `return_to_site`, a planned
switchover back and the other site rebuilt in turn; every row written on either side is there at the
end, the audit chain intact, the same pool following each move."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError

from careflow.audit import trail
from careflow.db import endpoint, replication
from careflow.dr import backup, sites
from careflow.models.audit import AuditAction, AuditEvent, AuditEventType
from careflow.models.dr import Approval, FailoverInput, FailoverStage
from careflow.models.dr_failback import FailbackInput, failback_id
from starters.clients import dr as client_of
from starters.clients.history import export_history
from tests.disaster_recovery.conftest import Pair
from tests.support.wait import wait_until
from workflows.dr_failback import DRFailbackWorkflow

pytestmark = pytest.mark.stack  # starts servers of its own
HISTORIES = Path(__file__).resolve().parents[1] / "histories"
RECORD = os.environ.get("CAREFLOW_RECORD_HISTORIES") == "1"


async def written(pair: Pair, n: int, who: str) -> None:
    audit = trail.PostgresAuditTrail(pair.pool)
    for i in range(n):
        await audit.append(AuditEvent(event_type=AuditEventType.PHI_ACCESS, actor=f"{who}-{i}",
                                      action=AuditAction.READ, resource_type="Patient"))  # fmt: skip


async def test_the_old_site_is_rebuilt_as_a_standby_then_takes_the_primary_role_back_when_told(
    client: Client, pair: Pair
) -> None:
    await written(pair, 10, "before-failover")
    pid = pair.primary.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    incident = f"fb-{uuid.uuid4().hex[:8]}"
    failover = await client_of.start(
        client, FailoverInput(incident=incident, requested_by="dr-ops", reason="primary killed",
                              detected_at=datetime.now(UTC), automatic=True, search_attributes=False,
                              canary_queues=[pair.task_queue]),
        task_queue=pair.task_queue,
    )  # fmt: skip
    assert (await client_of.result(client, failover.workflow_id)).stage is FailoverStage.FAILED_OVER
    await written(pair, 10, "on-the-standby-site")  # only the new primary has these

    # WAL the old primary archived before it died: the rebuild must hand it over, not delete it.
    unshipped = {p.name for p in backup.archived(pair.primary.wal_archive_dir)}
    assert unshipped
    started = await client_of.start_failback(
        client,
        FailbackInput(incident=incident, requested_by="dr-ops", synchronous=True, search_attributes=False,
                      canary_queues=[pair.task_queue]),
        task_queue=pair.task_queue,
    )  # fmt: skip
    wid = started.workflow_id
    assert wid == failback_id(incident)
    standing = await client_of.failback_settled(client, wid, timeout=300)
    assert standing.stage == "standing-by", standing.reason
    [rebuilt] = standing.rebuilt
    assert rebuilt.cloned and (rebuilt.state, rebuilt.sync) == ("streaming", "sync")
    assert not pair.primary.fence_file.exists() and pair.primary.is_running()  # rebuilt: no longer fenced
    assert (await sites.probe(pair.primary.dsn())).in_recovery  # a standby now, on its old port
    assert unshipped <= {p.name for p in backup.archived(pair.standby.wal_archive_dir)}

    handle = client.get_workflow_handle(wid)
    await handle.execute_update(DRFailbackWorkflow.return_to_site, Approval(by="dr-lead"))
    with pytest.raises(WorkflowUpdateFailedError) as refused:  # the validator: it is under way already
        await handle.execute_update(DRFailbackWorkflow.return_to_site, Approval(by="dr-lead"))
    assert "no return is awaited" in str(refused.value.cause)
    done = await client_of.failback_settled(client, wid, timeout=300)
    assert done.stage == "returned", done.reason
    assert done.returned_by == "dr-lead" and [r.standby_url.split(":")[-1] for r in done.rebuilt] == [
        f"{pair.primary.port}/careflow", f"{pair.standby.port}/careflow",
    ]  # fmt: skip

    # The original site is the primary again, the other its synchronous standby; the pool followed.
    assert endpoint.active(pair.settings).reason == f"{incident}-return"
    assert await pair.pool.fetchval("SELECT current_setting('port')::int") == pair.primary.port
    [replica] = await replication.replicas(pair.primary.dsn("postgres"))
    assert (replica.state, replica.sync) == ("streaming", "sync")
    await written(pair, 5, "after-return")
    assert await pair.pool.fetchval("SELECT count(*) FROM audit_events WHERE event_type = 'phi-access'") == 25
    assert (await trail.verify(pair.pool)).ok
    await wait_until(lambda: _replayed(pair), timeout=10, what="the standby replayed the last writes")
    if RECORD:
        (await export_history(client, wid, HISTORIES)).replace(HISTORIES / "DRFailbackWorkflow-returned.json")


async def _replayed(pair: Pair) -> bool:
    [replica] = await replication.replicas(pair.primary.dsn("postgres"))
    return replica.lag_bytes == 0
