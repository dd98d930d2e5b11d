"""The one idempotency key of a workflow step: `<workflow id>/<step>`.

Never the run id: it changes on retry-as-new-run and reset, and the step's effect must happen once.
Every side effect a step has is keyed by it: the audit event (`audit_events.idempotency_key`), the
notification (`notifications.dedup_key`, sent as the webhook's `Idempotency-Key`), the AI gateway
call (`request_id`), and the FHIR resource the step creates (a conditional create on
`identifier=<STEP_SYSTEM>|<key>`).  A step that runs more than once in a workflow says so in its
name (`alert-physician`, `draft-2`).
"""

from __future__ import annotations

from careflow.fhir.codes import CAREFLOW

STEP_SYSTEM = f"{CAREFLOW}/sid/workflow-step"  # the identifier system of resources steps create


def step_key(workflow_id: str, step: str) -> str:
    if not workflow_id or not step:
        raise ValueError("a step key needs the workflow id and the step name")
    return f"{workflow_id}/{step}"


def step_identifier(workflow_id: str, step: str) -> str:
    """`system|value` of the FHIR resource a step creates: a conditional create's search."""
    return f"{STEP_SYSTEM}|{step_key(workflow_id, step)}"
