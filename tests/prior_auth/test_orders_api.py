"""`POST /v1/events/orders` (the EHR's order-entry event) through careflow's real API over HTTP against
the session Temporal dev server: one workflow per order, duplicates attach, gateway team tokens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import httpx
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus

from careflow.config import Settings
from careflow.llm.config import GatewayConfig
from careflow.llm.teams import Team, TeamStore, sign_team_token
from starters.api.app import create_app
from tests.support.serving import serve
from tests.support.wait import wait_until
from workflows import search_attributes as sa


@dataclass
class Api:
    http: httpx.AsyncClient
    token: str
    settings: Settings

    async def team_token(self, *, tenants: list[str], phi: bool) -> str:
        """A token of a new team with these grants."""
        team_id = f"team-{uuid.uuid4().hex[:8]}"
        pool = await asyncpg.create_pool(self.settings.database_url, min_size=1, max_size=1)
        try:
            team = Team(team_id=team_id, monthly_budget_usd=Decimal(10), tokens_per_minute=10_000)
            await TeamStore(pool).create(
                team.model_copy(update={"phi_permitted": phi, "kb_tenants": tenants})
            )
        finally:
            await pool.close()
        return sign_team_token(GatewayConfig().signing_secret(self.settings), team_id, ttl_days=1)

    async def order(self, body: object, token: str | None = None) -> httpx.Response:
        headers = {"x-api-key": token if token is not None else self.token}
        return await self.http.post("/v1/events/orders", json=body, headers=headers)


@pytest_asyncio.fixture
async def api(settings: Settings, task_queue: str) -> AsyncIterator[Api]:
    app = create_app(settings)
    # No worker polls this queue: the test is about starting, not running, the workflow.
    app.state.orders_task_queue = task_queue
    async with serve(app) as root, httpx.AsyncClient(base_url=root, timeout=30) as http:
        api = Api(http, "", settings)
        api.token = await api.team_token(tenants=["default"], phi=True)  # the EHR's integration team
        yield api


async def runs_of(client: Client, wid: str) -> int:
    return len([wf async for wf in client.list_workflows(f"WorkflowId = '{wid}'")])


async def runs_reach(client: Client, wid: str, n: int) -> int:
    """Visibility (the list) lags a start by a moment: wait for the n-th run to be listed."""

    async def listed() -> int | None:
        return await runs_of(client, wid) if await runs_of(client, wid) >= n else None

    return await wait_until(listed, timeout=10, what=f"{n} runs of {wid} listed")


async def test_order_event_starts_one_workflow_and_duplicates_attach(api: Api, client: Client) -> None:
    order = f"ord-api-{uuid.uuid4().hex[:8]}"
    first = await api.order({"order_id": order, "priority": "expedited"})
    assert first.status_code == 202, first.text
    wid = f"prior-auth-{order}"
    assert first.json() == {"workflow_id": wid, "started": True}

    duplicates = await asyncio.gather(*(api.order({"order_id": order}) for _ in range(5)))
    assert [(d.status_code, d.json()) for d in duplicates] == [
        (202, {"workflow_id": wid, "started": False})
    ] * 5

    handle = client.get_workflow_handle(wid)
    desc = await handle.describe()
    assert desc.workflow_type == "PriorAuthWorkflow" and desc.status == WorkflowExecutionStatus.RUNNING
    assert desc.typed_search_attributes.get(sa.PIPELINE) == "prior-auth"
    assert desc.typed_search_attributes.get(sa.PRIORITY) == "expedited"
    assert desc.typed_search_attributes.get(sa.TENANT) == "default"

    # A run that failed or was terminated is recovered by sending the event again.
    await handle.terminate("test over")
    again = await api.order({"order_id": order})
    assert again.json() == {"workflow_id": wid, "started": True}
    assert await runs_reach(client, wid, 2) == 2
    await handle.terminate("test over")


async def test_order_event_needs_the_tenant_grant_and_phi_permission(api: Api, client: Client) -> None:
    east_only = await api.team_token(tenants=["east"], phi=True)
    no_phi = await api.team_token(tenants=["default"], phi=False)
    for token, body in (
        (east_only, {"order_id": f"ord-api-{uuid.uuid4().hex[:8]}", "tenant_id": "default"}),
        (no_phi, {"order_id": f"ord-api-{uuid.uuid4().hex[:8]}"}),
    ):
        resp = await api.order(body, token=token)
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["type"] == "permission_error"
        assert await runs_of(client, f"prior-auth-{body['order_id']}") == 0
    # The team's only tenant is the default when the event names none.
    order = f"ord-api-{uuid.uuid4().hex[:8]}"
    ok = await api.order({"order_id": order}, token=east_only)
    assert ok.status_code == 202, ok.text
    desc = await client.get_workflow_handle(f"prior-auth-{order}").describe()
    assert desc.typed_search_attributes.get(sa.TENANT) == "east"
    await client.get_workflow_handle(f"prior-auth-{order}").terminate("test over")


async def test_order_event_needs_a_team_token(api: Api) -> None:
    for token in ("", "not-a-jwt"):
        resp = await api.order({"order_id": f"ord-api-{uuid.uuid4().hex[:8]}"}, token=token)
        assert resp.status_code == 401


async def test_invalid_order_events_are_refused_without_echo(api: Api) -> None:
    for body in (
        {"order_id": "Jane Doe 1950-01-01"},
        {"order_id": "ord-1", "priority": "urgent-please"},
        {"priority": "standard"},
        ["ord-1"],
    ):
        resp = await api.order(body)
        assert resp.status_code == 400, body
        assert "Jane" not in resp.text and "urgent-please" not in resp.text
        assert resp.json()["error"]["message"].startswith("invalid request")
