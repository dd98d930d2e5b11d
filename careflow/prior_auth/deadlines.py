"""When things fall due in a prior authorization: the payer's decision deadline (CMS-0057-F), the
reminder and supervisor escalation of a review left waiting, and the payer follow-up of a pended claim."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from careflow.models.prior_auth import Priority

REMIND_AFTER = timedelta(hours=4)
ESCALATE_AFTER = timedelta(hours=8)
# Payer decision deadlines (CMS-0057-F): 72 hours expedited, 7 calendar days standard.
DECISION_DEADLINE = {Priority.EXPEDITED: timedelta(hours=72), Priority.STANDARD: timedelta(days=7)}
PAYER_FOLLOW_UP = timedelta(hours=1)

Due = Literal["expire", "remind", "escalate"]


@dataclass(frozen=True)
class ReviewClock:
    """The review's deadlines, counted from the moment its draft was ready."""

    deadline: datetime
    remind_at: datetime
    escalate_at: datetime

    @classmethod
    def starting(cls, draft_ready_at: datetime, deadline: datetime) -> ReviewClock:
        return cls(deadline, draft_ready_at + REMIND_AFTER, draft_ready_at + ESCALATE_AFTER)

    def due(self, now: datetime, reminded: bool, escalated: bool) -> Due | None:
        """What is due now, in order: expiry at the deadline, else the reminder, else the escalation."""
        if now >= self.deadline:
            return "expire"
        if not reminded and now >= self.remind_at:
            return "remind"
        if not escalated and now >= self.escalate_at:
            return "escalate"
        return None

    def next_due(self, reminded: bool, escalated: bool) -> datetime:
        """The next moment something falls due (the deadline at the latest)."""
        return min(
            [self.deadline]
            + ([self.remind_at] if not reminded else [])
            + ([self.escalate_at] if not escalated else [])
        )


def follow_up_in_time(now: datetime, deadline: datetime) -> bool:
    """Whether one more payer follow-up fits before the decision deadline."""
    return now + PAYER_FOLLOW_UP <= deadline
