"""The FHIR client's errors.  Messages are PHI-free: interaction, status, issue codes and locations."""

from __future__ import annotations

from typing import Any

from careflow.fhir.outcome import Issue, operation_outcome, summary


class FhirError(Exception):
    """Base of every FHIR client error.  Messages are PHI-free: status, interaction, issue codes."""


class FhirOperationError(FhirError):
    """The server refused the request (a 4xx other than 429); not retried."""

    def __init__(self, status: int, outcome: dict[str, Any], interaction: str = "") -> None:
        self.status = status
        self.outcome = outcome
        self.interaction = interaction
        super().__init__(f"FHIR {interaction} answered {status}: {summary(outcome)}".replace("  ", " "))


class FhirNotFound(FhirOperationError):
    """404 Not Found or 410 Gone."""


class FhirPreconditionFailed(FhirOperationError):
    """409 Conflict or 412 Precondition Failed (a version mismatch, criteria matching several)."""


class FhirUnavailable(FhirError):
    """No usable answer after the allowed attempts (or a non-idempotent request with an unknown outcome)."""

    def __init__(
        self, message: str, *, attempts: int, status: int | None = None, retry_after: float | None = None
    ):
        self.attempts = attempts
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class FhirValidationError(FhirError):
    """A resource the caller wanted to send is not valid FHIR R4; `outcome` says where."""

    def __init__(self, issues: list[Issue]) -> None:
        self.outcome = operation_outcome(issues)
        super().__init__(f"invalid FHIR resource: {summary(self.outcome)}")


class FhirProtocolError(FhirError):
    """The server answered something that is not what FHIR promises (not JSON, invalid resource, ...)."""


_STATUS_ERRORS: dict[int, type[FhirOperationError]] = {
    404: FhirNotFound,
    410: FhirNotFound,
    409: FhirPreconditionFailed,
    412: FhirPreconditionFailed,
}


def error_for_status(status: int, outcome: dict[str, Any], interaction: str = "") -> FhirOperationError:
    return _STATUS_ERRORS.get(status, FhirOperationError)(status, outcome, interaction)
