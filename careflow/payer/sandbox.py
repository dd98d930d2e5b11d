"""careflow's sandbox payer: answers Da Vinci PAS prior-authorization requests with ClaimResponses.

`build_router()` takes its pool from `request.app.state.pool` (and an optional
`request.app.state.payer_policy`); careflow's API mounts it at `/payer/r4` (starters/api/payer.py).

    POST /Claim/$submit        PAS request Bundle -> Bundle [ClaimResponse]; 400 OperationOutcome if invalid
    POST /Claim/$inquire       Bundle with the Claim, or Parameters{identifier} -> Bundle [ClaimResponse]
    GET  /ClaimResponse/{id}   the current ClaimResponse

Decisions are deterministic, so demos and tests know what to expect:
- an item outside the sandbox plan's covered codes is denied at once (X12 306 `A3`);
- a claim whose criteria summary has criteria not met is pended (`A4`, outcome `queued`) and denied
  on review; one with criteria unknown, total knee arthroplasty, and a configured fraction of claims
  chosen by a hash of the Claim identifier are pended and approved on review.  A pended claim is
  reviewed on a later `$inquire`, once `pend_inquiries` inquiries were made or `pend_seconds` passed;
- anything else (every criterion met) is approved (`A1`, outcome `complete`, with a preAuthRef).
A resubmission of the same Claim identifier answers the stored ClaimResponse and decides nothing anew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import APIRouter, Request, Response

from careflow.fhir import codes
from careflow.fhir.outcome import Issue
from careflow.fhir.resources import InvalidResource, dumps, loads, validate_resource
from careflow.fhir.server import fhir_errors, fhir_response, outcome_response
from careflow.fhir.store import FhirRequestError
from careflow.payer.pas import CAREFLOW_SUPPORTING_INFO, CRITERIA_SUMMARY, validate_pas_bundle

X12_306 = "https://codesystem.x12.org/005010/306"
REVIEW_ACTION = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-reviewAction"
ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
CLAIM_RESPONSE_ID_SYSTEM = f"{codes.CAREFLOW}/sid/payer-claim-response"
REVIEW_CODES = {
    "approved": ("A1", "Certified in total"),
    "denied": ("A3", "Not Certified"),
    "pended": ("A4", "Pended"),
}
# Items the sandbox plan covers: semaglutide, adalimumab (RxNorm), lumbar MRI, total knee (CPT).
COVERED = frozenset({"1991302", "327361", "72148", "27447"})


CERTIFIED = "Certified in total."
PENDED = "Pended for medical review."


@dataclass(frozen=True)
class SandboxPolicy:
    covered: frozenset[str] = COVERED
    pended_items: frozenset[str] = field(default_factory=lambda: frozenset({"27447"}))
    pend_fraction: float = 0.0  # of the other claims, chosen by a hash of the Claim identifier
    pend_inquiries: int = 2
    pend_seconds: float = 3600.0


@dataclass(frozen=True)
class Assessment:
    decision: str  # now: approved | pended | denied
    final_decision: str  # once a pend is reviewed
    disposition: str  # of a denial (approvals and pends answer CERTIFIED / PENDED)


def _digest(identifier: str) -> str:
    return hashlib.sha256(identifier.encode()).hexdigest()


def _criteria(claim: dict[str, Any]) -> dict[str, int] | None:
    for info in claim.get("supportingInfo") or []:
        codings = (info.get("category") or {}).get("coding") or []
        wanted = (CAREFLOW_SUPPORTING_INFO, CRITERIA_SUMMARY)
        if any((c.get("system"), c.get("code")) == wanted for c in codings):
            pairs = (p.partition("=") for p in str(info.get("valueString", "")).split())
            return {k: int(v) for k, _, v in pairs if v.isdigit()}
    return None


def item_code(claim: dict[str, Any]) -> str:
    codings = claim["item"][0].get("productOrService", {}).get("coding") or [{}]
    return str(codings[0].get("code", ""))


def assess(claim: dict[str, Any], identifier: str, policy: SandboxPolicy) -> Assessment:
    code = item_code(claim)
    if code not in policy.covered:
        return Assessment("denied", "denied", "Not certified: the requested item is not a covered benefit.")
    criteria = _criteria(claim) or {}
    if criteria.get("not_met", 0) > 0:
        # A medical reviewer reads the documentation first; it does not show the criteria met.
        return Assessment("pended", "denied", "Not certified: criteria not met as documented.")
    hashed = int(_digest(identifier)[:8], 16) / 0x1_0000_0000
    if code in policy.pended_items or hashed < policy.pend_fraction or criteria.get("unknown", 0) > 0:
        return Assessment("pended", "approved", PENDED)
    return Assessment("approved", "approved", CERTIFIED)


def _identifier_key(identifier: Any) -> str | None:
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        return f"{identifier['system']}|{identifier['value']}"
    return None


def claim_response(row: asyncpg.Record) -> dict[str, Any]:
    bundle = json.loads(row["bundle"]) if isinstance(row["bundle"], str) else row["bundle"]
    claim = bundle["entry"][0]["resource"]
    decision = row["decision"]
    code, display = REVIEW_CODES[decision]
    system, _, value = row["claim_identifier"].partition("|")
    review = {"coding": [{"system": X12_306, "code": code, "display": display}]}
    action: list[dict[str, Any]] = [{"url": "code", "valueCodeableConcept": review}]
    if row["preauth_ref"]:
        action.insert(0, {"url": "number", "valueString": row["preauth_ref"]})
    response: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": row["claim_response_id"],
        "identifier": [{"system": CLAIM_RESPONSE_ID_SYSTEM, "value": row["claim_response_id"]}],
        "status": "active",
        "type": claim["type"],
        "use": "preauthorization",
        "patient": claim["patient"],
        "created": (row["decided_at"] or row["received_at"]).astimezone(UTC).isoformat(timespec="seconds"),
        "insurer": claim.get("insurer") or {"display": "careflow sandbox payer"},
        "requestor": claim["provider"],
        "request": {"identifier": {"system": system, "value": value}},
        "outcome": "queued" if decision == "pended" else "complete",
        "disposition": {"approved": CERTIFIED, "pended": PENDED}.get(decision, row["disposition"]),
        "item": [
            {
                "itemSequence": 1,
                "adjudication": [
                    {
                        "extension": [{"url": REVIEW_ACTION, "extension": action}],
                        "category": {"coding": [{"system": ADJUDICATION, "code": "submitted"}]},
                    }
                ],
            }
        ],
    }
    if row["preauth_ref"]:
        response["preAuthRef"] = row["preauth_ref"]
    validate_resource(response)  # what careflow answers is valid R4 too
    return response


def _answer(row: asyncpg.Record) -> Response:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "entry": [{"fullUrl": f"ClaimResponse/{row['claim_response_id']}", "resource": claim_response(row)}],
    }
    return fhir_response(200, dumps(bundle))


async def _body(request: Request) -> Any:
    try:
        return loads(await request.body())
    except ValueError:
        raise FhirRequestError(400, [Issue("structure", "the body is not JSON", ("Bundle",))]) from None


async def submit(pool: asyncpg.Pool, bundle: Any, policy: SandboxPolicy) -> asyncpg.Record:
    """Store and decide a PAS request; a known Claim identifier returns the stored row unchanged."""
    try:
        claim = validate_pas_bundle(bundle)
    except InvalidResource as exc:
        raise FhirRequestError(400, exc.issues) from None
    key = next(k for k in map(_identifier_key, claim["identifier"]) if k)
    verdict = assess(claim, key, policy)
    decided = verdict.decision != "pended"
    priority = ((claim.get("priority") or {}).get("coding") or [{}])[0].get("code", "normal")
    row = await pool.fetchrow(
        """INSERT INTO payer_claims (claim_identifier, claim_response_id, bundle, item_code, priority,
               decision, final_decision, disposition, preauth_ref, pend_inquiries, pend_until, decided_at)
           VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11, CASE WHEN $12 THEN now() END)
           ON CONFLICT (claim_identifier) DO NOTHING RETURNING *""",
        key,
        "cr-" + _digest(key)[:24],
        dumps(bundle),
        item_code(claim),
        priority,
        verdict.decision,
        verdict.final_decision,
        verdict.disposition,
        _preauth_ref(key) if verdict.decision == "approved" else None,
        policy.pend_inquiries,
        datetime.now(UTC) + timedelta(seconds=policy.pend_seconds),
        decided,
    )
    if row is None:
        row = await pool.fetchrow("SELECT * FROM payer_claims WHERE claim_identifier = $1", key)
    assert row is not None
    return row


def _preauth_ref(key: str) -> str:
    return "PA" + _digest(key)[:10].upper()


def _inquiry_key(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    if body.get("resourceType") == "Parameters":
        for p in body.get("parameter") or []:
            if isinstance(p, dict) and p.get("name") == "identifier":
                return _identifier_key(p.get("valueIdentifier"))
        return None
    if body.get("resourceType") == "Bundle":
        entries = body.get("entry") or [{}]
        claim = entries[0].get("resource") if isinstance(entries[0], dict) else None
        if isinstance(claim, dict) and claim.get("resourceType") == "Claim":
            return next((k for k in map(_identifier_key, claim.get("identifier") or []) if k), None)
    return None


async def inquire(pool: asyncpg.Pool, body: Any) -> asyncpg.Record:
    """Count an inquiry; a pended claim whose review is due gets its final decision."""
    key = _inquiry_key(body)
    if key is None:
        why = "an inquiry names the Claim identifier (Parameters.identifier or a Claim Bundle)"
        raise FhirRequestError(400, [Issue("required", why, ("Parameters.parameter",))])
    row = await pool.fetchrow(
        """UPDATE payer_claims SET
               inquiries = inquiries + 1,
               decision = CASE WHEN decision = 'pended'
                               AND (inquiries + 1 >= pend_inquiries OR now() >= pend_until)
                          THEN final_decision ELSE decision END,
               decided_at = CASE WHEN decision = 'pended'
                                 AND (inquiries + 1 >= pend_inquiries OR now() >= pend_until)
                            THEN now() ELSE decided_at END
           WHERE claim_identifier = $1 RETURNING *""",
        key,
    )
    if row is None:
        raise FhirRequestError(404, [Issue("not-found", "no prior-authorization Claim with this identifier")])
    if row["decision"] == "approved" and row["preauth_ref"] is None:
        row = await pool.fetchrow(
            "UPDATE payer_claims SET preauth_ref = $2 WHERE claim_identifier = $1 RETURNING *",
            key,
            _preauth_ref(key),
        )
    assert row is not None
    return row


def build_router() -> APIRouter:
    router = APIRouter()

    def policy(request: Request) -> SandboxPolicy:
        return getattr(request.app.state, "payer_policy", None) or SandboxPolicy()

    @router.post("/Claim/$submit")
    @fhir_errors
    async def claim_submit(request: Request) -> Response:
        return _answer(await submit(request.app.state.pool, await _body(request), policy(request)))

    @router.post("/Claim/$inquire")
    @fhir_errors
    async def claim_inquire(request: Request) -> Response:
        return _answer(await inquire(request.app.state.pool, await _body(request)))

    @router.get("/ClaimResponse/{response_id}")
    @fhir_errors
    async def read_claim_response(request: Request, response_id: str) -> Response:
        row = await request.app.state.pool.fetchrow(
            "SELECT * FROM payer_claims WHERE claim_response_id = $1", response_id
        )
        if row is None:
            return outcome_response(404, [Issue("not-found", "no ClaimResponse with this id")])
        return fhir_response(200, dumps(claim_response(row)))

    return router
