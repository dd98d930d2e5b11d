"""Typed refusals and failures of the gateway.  Messages carry ids and numbers, never PHI."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every gateway refusal; `retryable` says whether the same call may succeed later."""

    retryable = False


class UnknownTeam(GatewayError):
    def __init__(self, team_id: str) -> None:
        self.team_id = team_id
        super().__init__(f"unknown team {team_id!r}")


class TierNotAllowed(GatewayError):
    def __init__(self, team_id: str, tier: str, allowed: list[str]) -> None:
        self.team_id, self.tier, self.allowed = team_id, tier, allowed
        super().__init__(f"team {team_id!r} may not use tier {tier!r} (allowed: {', '.join(allowed)})")


class PhiNotPermitted(GatewayError):
    def __init__(self, team_id: str, reason: str) -> None:
        self.team_id = team_id
        super().__init__(f"PHI request refused for team {team_id!r}: {reason}")


class BudgetExceeded(GatewayError):
    def __init__(self, team_id: str, month: str, used_usd: float, budget_usd: float) -> None:
        self.team_id, self.month, self.used_usd, self.budget_usd = team_id, month, used_usd, budget_usd
        super().__init__(
            f"team {team_id!r} monthly budget for {month} exhausted: "
            f"${used_usd:.4f} of ${budget_usd:.2f} used"
        )


class RateLimited(GatewayError):
    retryable = True

    def __init__(self, team_id: str, limit_tpm: int, requested: int, retry_after: float) -> None:
        self.team_id, self.limit_tpm, self.requested = team_id, limit_tpm, requested
        self.retry_after = max(retry_after, 0.05)
        super().__init__(
            f"team {team_id!r} over its rate limit of {limit_tpm} tokens/min "
            f"({requested} requested); retry after {self.retry_after:.1f}s"
        )


class ProvidersUnavailable(GatewayError):
    """Every provider of the tier is failing or has its breaker open."""

    retryable = True

    def __init__(self, tier: str, reasons: list[str], retry_after: float) -> None:
        self.tier, self.reasons, self.retry_after = tier, reasons, retry_after
        super().__init__(f"no provider available for tier {tier!r}: {'; '.join(reasons)}")


class StructuredOutputFailed(GatewayError):
    """The model's output failed validation twice (first answer and one corrective retry)."""

    retryable = True

    def __init__(self, task: str, request_id: str, error: str) -> None:
        self.task, self.request_id = task, request_id
        super().__init__(f"task {task!r} request {request_id}: output invalid after retry: {error}")
