"""Deduplicated notifications: record first, then deliver, at most one delivery per key.

An activity that sends a notification may run twice (a retry after a lost completion).  The row's
natural key (`dedup_key`, from the workflow id and step) makes the record idempotent, and the
webhook carries the same key as `Idempotency-Key` so the receiver can drop a duplicate that slipped
through between delivery and our `delivered` update.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from careflow.security.logging import get_logger

log = get_logger("careflow.notify")


class DeliveryFailed(Exception):
    """The webhook did not accept the notification; the caller's retry policy decides what next."""


@dataclass(frozen=True)
class NotificationResult:
    dedup_key: str
    delivered: bool  # False when only recorded (no webhook configured)
    duplicate: bool  # this key had already been delivered before this call


class Notifier:
    def __init__(self, pool: asyncpg.Pool, webhook_url: str | None, http: httpx.AsyncClient | None = None):
        self._pool = pool
        self._url = webhook_url
        self._http = http or httpx.AsyncClient(timeout=10.0)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(
        self,
        *,
        dedup_key: str,
        kind: str,
        recipient_id: str | None,
        workflow_id: str | None,
        body: dict[str, Any],
    ) -> NotificationResult:
        channel = "webhook" if self._url else "record"
        async with self._pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO notifications (dedup_key, channel, recipient_id, kind, workflow_id, body)
                   VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (dedup_key) DO NOTHING""",
                dedup_key,
                channel,
                recipient_id,
                kind,
                workflow_id,
                json.dumps(body),
            )
            row = await conn.fetchrow(
                "SELECT status, body FROM notifications WHERE dedup_key = $1", dedup_key
            )
        assert row is not None
        if row["status"] == "delivered":
            return NotificationResult(dedup_key, delivered=channel == "webhook", duplicate=True)
        if self._url is None:
            await self._mark(dedup_key, "delivered", None)
            return NotificationResult(dedup_key, delivered=False, duplicate=False)
        if (reason := await self._post(dedup_key, kind, row["body"])) is not None:
            await self._mark(dedup_key, "failed", reason)
            log.warning("notification delivery failed", dedup_key=dedup_key, kind=kind, reason=reason)
            raise DeliveryFailed(reason)
        await self._mark(dedup_key, "delivered", None)
        log.info("notification delivered", dedup_key=dedup_key, kind=kind, recipient_id=recipient_id)
        return NotificationResult(dedup_key, delivered=True, duplicate=False)

    async def deliver_unrecorded(self, *, dedup_key: str, kind: str, body: dict[str, Any]) -> bool:
        """The webhook alone, for when the database that records notifications is what is down (a DR
        page): the same Idempotency-Key as `send`, so a receiver drops a later copy.  False: no webhook
        is configured; DeliveryFailed: it did not accept."""
        if self._url is None:
            return False
        if (reason := await self._post(dedup_key, kind, json.dumps(body))) is not None:
            raise DeliveryFailed(reason)
        log.warning("notification delivered unrecorded", dedup_key=dedup_key, kind=kind)
        return True

    async def _post(self, dedup_key: str, kind: str, content: str) -> str | None:
        """POST to the webhook, keyed for the receiver's deduplication; why it failed, or None."""
        assert self._url is not None
        try:
            resp = await self._http.post(
                self._url,
                content=content,
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": dedup_key,
                    "X-Careflow-Kind": kind,
                },
            )
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            status = f" {exc.response.status_code}" if isinstance(exc, httpx.HTTPStatusError) else ""
            return type(exc).__name__ + status
        return None

    async def _mark(self, key: str, status: str, error: str | None) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE notifications SET status = $2, attempts = attempts + 1, last_error = $3,
                          delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END
                   WHERE dedup_key = $1""",
                key,
                status,
                error,
            )
