"""What emits audit events depends on this protocol, not on the Postgres trail behind it."""

from __future__ import annotations

from typing import Protocol

from careflow.models.audit import AuditEvent


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None:
        """Durably append one event; raise if it could not be recorded (never drop silently)."""
        ...
