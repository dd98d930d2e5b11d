"""The health monitor's arithmetic (seed P20): an unbroken run of failed probes per target, and which
targets have failed for long enough to start a failover.  One success clears a target's run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class Streaks:
    failing_since: dict[str, datetime] = field(default_factory=dict)

    def observe(self, target: str, ok: bool, at: datetime) -> None:
        if ok:
            self.failing_since.pop(target, None)
        else:
            self.failing_since.setdefault(target, at)

    def due(self, at: datetime, after: timedelta) -> dict[str, datetime]:
        """The targets failing for at least `after`, each with its first failed probe."""
        return {t: since for t, since in self.failing_since.items() if at - since >= after}
