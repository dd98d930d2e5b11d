"""`POST /v1/events/orders` (the EHR's order-entry event) through careflow's real API over HTTP against
the session Temporal dev server: one workflow per order, duplicates attach, gateway team tokens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus

from careflow.config import Settings
from careflow.llm.config import GatewayConfig
from starters.api import create_app
from starters.api_gateway import sign_team_token
from tests.support.serving import serve
from workflows import search_attributes as sa


@dataclass
class Api:
    http: httpx.AsyncClient
    token: str

    async def order(self, body: object, token: str | None = None) -> httpx.Response:
        headers = {"x-api-key": token if token is not None else self.token}
        return await self.http.post("/v1/events/orders", json=body, headers=headers)


@pytest_asyncio.fixture
async def api(settings: Settings, task_queue: str) -> AsyncIterator[Api]:
    app = create_app(settings)
    # No worker polls this queue: the test is about starting, not running, the workflow.
    app.state.orders_task_queue = task_queue
    token = sign_team_token(GatewayConfig().signing_secret(settings), "ehr-orders", ttl_days=1)
    async with serve(app) as root, httpx.AsyncClient(base_url=root, timeout=30) as http:
        yield Api(http, token)


async def runs_of(client: Client, wid: str) -> int:
    return len([wf async for wf in client.list_workflows(f"WorkflowId = '{wid}'")])


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

    # Once the workflow has closed, the same event still starts nothing new.
    await handle.terminate("test over")
    again = await api.order({"order_id": order})
    assert again.json() == {"workflow_id": wid, "started": False}
    assert await runs_of(client, wid) == 1


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
        assert resp.json()["error"].startswith("invalid order event")
