"""Client of a payer's Da Vinci PAS endpoint: `Claim/$submit` and `Claim/$inquire`.

Both operations are safe to repeat (the payer deduplicates by the Claim identifier), so 5xx answers,
429s, timeouts and connection errors are retried with exponential backoff.  A refusal (4xx with an
OperationOutcome) raises PayerRejected; messages carry status and issue codes/locations only (no PHI).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import httpx
from pydantic import BaseModel

from careflow.fhir.outcome import summary
from careflow.fhir.resources import FHIR_JSON, dumps, loads
from careflow.payer.pas import CLAIM_ID_SYSTEM

X12_306 = "https://codesystem.x12.org/005010/306"
_DECISIONS = {"A1": "approved", "A2": "approved", "A6": "approved", "A3": "denied", "A4": "pended"}


class PayerDecision(BaseModel):
    outcome: Literal["approved", "pended", "denied"]
    claim_response_id: str
    preauth_ref: str | None = None
    disposition: str = ""
    review_code: str | None = None  # X12 306: A1 certified, A3 not certified, A4 pended


class PayerError(Exception):
    """Base of the payer client's errors; messages are PHI-free."""


class PayerRejected(PayerError):
    """The payer refused the request (4xx other than 429); repeating it will not help."""

    def __init__(self, status: int, outcome: dict[str, Any] | None, operation: str) -> None:
        self.status = status
        self.outcome = outcome
        super().__init__(f"payer {operation} answered {status}: {summary(outcome)}")


class PayerUnavailable(PayerError):
    """No usable answer after every attempt (5xx, 429, timeouts, connection errors)."""


class PayerProtocolError(PayerError):
    """The payer answered something that is not a ClaimResponse."""


def decision_of(claim_response: dict[str, Any]) -> PayerDecision:
    """Read the decision from a ClaimResponse: the PAS reviewAction code first, else the outcome."""
    code = None
    for item in claim_response.get("item") or []:
        for adj in item.get("adjudication") or []:
            for ext in adj.get("extension") or []:
                for sub in ext.get("extension") or []:
                    for coding in (sub.get("valueCodeableConcept") or {}).get("coding") or []:
                        if coding.get("system") == X12_306:
                            code = coding.get("code")
    if code in _DECISIONS:
        outcome = _DECISIONS[code]
    elif claim_response.get("outcome") == "queued":
        outcome = "pended"
    elif claim_response.get("outcome") == "complete" and claim_response.get("preAuthRef"):
        outcome = "approved"
    else:
        outcome = "denied"
    return PayerDecision(
        outcome=outcome,
        claim_response_id=str(claim_response.get("id", "")),
        preauth_ref=claim_response.get("preAuthRef"),
        disposition=str(claim_response.get("disposition", "")),
        review_code=code,
    )


class PayerClient:
    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient | None = None,
        *,
        attempts: int = 4,
        backoff_s: float = 0.25,
        timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._owns_http = http is None
        self._attempts = attempts
        self._backoff = backoff_s

    async def __aenter__(self) -> PayerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def submit(self, bundle: dict[str, Any]) -> PayerDecision:
        """POST the PAS request Bundle to `Claim/$submit`."""
        return decision_of(await self._post("Claim/$submit", bundle, "$submit"))

    async def inquire(self, claim_identifier: str, system: str = CLAIM_ID_SYSTEM) -> PayerDecision:
        """Ask for the current decision on a submitted Claim (by its business identifier)."""
        params = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "identifier", "valueIdentifier": {"system": system, "value": claim_identifier}}
            ],
        }
        return decision_of(await self._post("Claim/$inquire", params, "$inquire"))

    async def _post(self, path: str, body: dict[str, Any], operation: str) -> dict[str, Any]:
        url = f"{self.base_url}/{path}"
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        content = dumps(body)
        last = "no attempt made"
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                resp = await self._http.post(url, content=content, headers=headers)
            except httpx.TransportError as exc:  # timeouts and connection errors
                last = type(exc).__name__
                continue
            if resp.status_code >= 500 or resp.status_code == 429:
                last = f"HTTP {resp.status_code}"
                continue
            if resp.status_code >= 400:
                raise PayerRejected(resp.status_code, _json_or_none(resp), operation)
            return _claim_response(resp, operation)
        raise PayerUnavailable(f"payer {operation} failed after {self._attempts} attempts: {last}")


def _json_or_none(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        value = loads(resp.content)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _claim_response(resp: httpx.Response, operation: str) -> dict[str, Any]:
    """The ClaimResponse of a PAS response Bundle (first entry), or a bare ClaimResponse."""
    body = _json_or_none(resp)
    if body and body.get("resourceType") == "Bundle":
        body = next(
            (
                e.get("resource")
                for e in body.get("entry") or []
                if (e.get("resource") or {}).get("resourceType") == "ClaimResponse"
            ),
            None,
        )
    if not body or body.get("resourceType") != "ClaimResponse":
        raise PayerProtocolError(f"payer {operation} answered {resp.status_code} without a ClaimResponse")
    return body
