import uuid

import asyncpg
import pytest

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.notify.notifier import DeliveryFailed, Notifier
from tests.support.http_receiver import http_receiver


@pytest.fixture
async def pool(database_url: str):  # type: ignore[no-untyped-def]
    p = await create_pool(Settings())
    yield p
    await p.close()


async def status(pool: asyncpg.Pool, key: str) -> tuple[str, int]:
    row = await pool.fetchrow("SELECT status, attempts FROM notifications WHERE dedup_key = $1", key)
    return row["status"], row["attempts"]


async def test_webhook_delivered_once_per_key(pool: asyncpg.Pool) -> None:
    key = f"lab-alert-{uuid.uuid4().hex}:physician"
    async with http_receiver() as hook:
        notifier = Notifier(pool, hook.url)
        first = await notifier.send(
            dedup_key=key,
            kind="lab-alert",
            recipient_id="prac-1",
            workflow_id="wf",
            body={"alert": "critical potassium"},
        )
        again = await notifier.send(
            dedup_key=key,
            kind="lab-alert",
            recipient_id="prac-1",
            workflow_id="wf",
            body={"alert": "critical potassium"},
        )
        await notifier.aclose()
    assert first.delivered and not first.duplicate
    assert again.duplicate
    assert len(hook.requests) == 1
    assert hook.requests[0]["headers"]["idempotency-key"] == key
    assert hook.requests[0]["body"] == {"alert": "critical potassium"}
    assert await status(pool, key) == ("delivered", 1)


async def test_failed_delivery_raises_and_a_retry_delivers(pool: asyncpg.Pool) -> None:
    key = f"k-{uuid.uuid4().hex}"
    async with http_receiver() as hook:
        hook.fail_next = 1
        notifier = Notifier(pool, hook.url)
        with pytest.raises(DeliveryFailed, match="503"):
            await notifier.send(dedup_key=key, kind="lab-alert", recipient_id=None, workflow_id=None, body={})
        assert await status(pool, key) == ("failed", 1)
        result = await notifier.send(
            dedup_key=key, kind="lab-alert", recipient_id=None, workflow_id=None, body={}
        )
        await notifier.aclose()
    assert result.delivered and len(hook.requests) == 1
    assert await status(pool, key) == ("delivered", 2)


async def test_without_webhook_the_notification_is_recorded(pool: asyncpg.Pool) -> None:
    key = f"k-{uuid.uuid4().hex}"
    notifier = Notifier(pool, None)
    result = await notifier.send(
        dedup_key=key, kind="lab-alert", recipient_id="r", workflow_id="w", body={"a": 1}
    )
    await notifier.aclose()
    assert not result.delivered and not result.duplicate
    assert await status(pool, key) == ("delivered", 1)
