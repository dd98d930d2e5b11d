"""Audit rows as FHIR R4 AuditEvent resources, shaped after IHE Basic Audit Log Patterns (BALP).

A PHI read or write becomes a BALP RESTful-interaction event (type rest, subtype the interaction) with
exactly one patient entity when the row names a patient, plus the data entity it touched; a request id
travels as a transaction entity (BALP `XrequestId`) so FHIR reads correlate with the AI inference that
used them.  Each resource is validated with fhir.resources' R4B AuditEvent before it is returned.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent

from careflow.audit.trail import CONTENT_FIELDS

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_ENTITY_TYPE = "http://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
CAREFLOW_EVENT_TYPE = "https://careflow.dev/fhir/CodeSystem/audit-event-type"
CAREFLOW_ACTOR = "https://careflow.dev/fhir/sid/actor"
TEMPORAL_WORKFLOW_ID = "https://temporal.io/workflow-id"

# action code -> FHIR restful interaction (BALP subtype)
_INTERACTION = {"C": "create", "R": "read", "U": "update", "D": "delete", "E": "operation"}
# careflow outcome -> FHIR AuditEvent.outcome (0 success, 4 minor failure, 8 serious failure)
_OUTCOME = {"success": "0", "rejected": "4", "failure": "8"}


def _event_type(
    event_type: str, action: str, resource_id: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    if event_type in ("phi-access", "phi-write"):
        # A read without a resource id was a search (BALP Query pattern keeps type rest).
        interaction = "search-type" if action == "R" and not resource_id else _INTERACTION[action]
        return (
            {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "Restful Operation"},
            {"system": RESTFUL_INTERACTION, "code": interaction},
        )
    if event_type == "ai-inference":
        return (
            {"system": DCM, "code": "110112", "display": "Query"},
            {"system": CAREFLOW_EVENT_TYPE, "code": "ai-inference", "display": "AI inference with PHI"},
        )
    if event_type == "system-operation":
        return (
            {"system": DCM, "code": "110100", "display": "Application Activity"},
            {"system": CAREFLOW_EVENT_TYPE, "code": "system-operation", "display": "Platform operation"},
        )
    return (
        {"system": DCM, "code": "110100", "display": "Application Activity"},
        {"system": CAREFLOW_EVENT_TYPE, "code": "reviewer-action", "display": "Reviewer action"},
    )


def _agent(actor: str, actor_type: str) -> dict[str, Any]:
    role = (
        {"system": DCM, "code": "110153", "display": "Source Role ID"}
        if actor_type == "service"
        else {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass", "code": "PROV"}
    )
    return {
        "type": {"coding": [role]},
        "who": {"identifier": {"system": CAREFLOW_ACTOR, "value": actor}},
        "requestor": True,
    }


def _entities(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if row["patient_id"]:
        # BALP: exactly one patient entity, role Patient, type Person.
        entities.append(
            {
                "what": {"reference": f"Patient/{row['patient_id']}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    data_is_patient = row["resource_type"] == "Patient" and row["resource_id"] == row["patient_id"]
    if row["resource_type"] and not data_is_patient:
        what = (
            {"reference": f"{row['resource_type']}/{row['resource_id']}"}
            if row["resource_id"]
            else {"display": row["resource_type"]}
        )
        entities.append(
            {
                "what": what,
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if row["request_id"]:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "type": {"coding": [{"system": BALP_ENTITY_TYPE, "code": "XrequestId"}]},
                        "value": row["request_id"],
                    }
                },
                "type": {"system": DCM, "code": "110150", "display": "Application"},
            }
        )
    return entities


def _occurred(value: Any) -> str:
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)).isoformat()


def to_fhir_audit_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """One audit row -> a validated R4B AuditEvent (as a JSON-ready dict)."""
    type_coding, subtype = _event_type(row["event_type"], row["action"], row["resource_id"])
    detail = row["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else dict(detail or {})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"careflow-audit-{row['id']}",
        "type": type_coding,
        "subtype": [subtype],
        "action": row["action"],
        "recorded": _occurred(row["occurred_at"]),
        "outcome": _OUTCOME[row["outcome"]],
        "agent": [_agent(row["actor"], row["actor_type"])],
        "source": {
            "observer": {"display": "careflow"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": _entities(row),
    }
    if row["outcome"] != "success" and detail.get("reason"):
        resource["outcomeDesc"] = detail["reason"]
    if row["workflow_id"]:
        resource["agent"].append(
            {
                "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                "who": {
                    "identifier": {"system": "https://temporal.io/workflow-id", "value": row["workflow_id"]}
                },
                "requestor": False,
            }
        )
    if not resource["entity"]:
        del resource["entity"]
    validated = FhirAuditEvent.model_validate(resource)
    return validated.model_dump(mode="json", exclude_none=True)


async def export_since(
    db: asyncpg.Pool | asyncpg.Connection, since: datetime, *, batch: int = 2000
) -> AsyncIterator[dict[str, Any]]:
    """AuditEvents for rows that occurred at or after `since`, in chain order."""
    columns = ", ".join(("id", *CONTENT_FIELDS))
    last_id = 0
    while True:
        rows = await db.fetch(
            f"SELECT {columns} FROM audit_events WHERE id > $1 AND occurred_at >= $2 ORDER BY id LIMIT $3",  # noqa: S608
            last_id,
            since,
            batch,
        )
        if not rows:
            return
        for row in rows:
            yield to_fhir_audit_event(row)
        last_id = rows[-1]["id"]
