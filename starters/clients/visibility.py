"""Listing a pipeline's workflows: one visibility query over careflow's search attributes
(workflows/search_attributes.py), never a query to each workflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from temporalio import workflow
from temporalio.client import Client

# What a listing shows by default: open work and work that failed (lost until its event is resent).
OPEN_OR_FAILED = "ExecutionStatus IN ('Running', 'Failed', 'Terminated', 'TimedOut')"


def type_name(workflow_class: type) -> str:
    """The workflow type a class is registered as (its `@workflow.defn(name=...)`)."""
    name = workflow._Definition.must_from_class(workflow_class).name
    if name is None:
        raise ValueError(f"{workflow_class.__name__} is a dynamic workflow: it has no type name")
    return name


@dataclass(frozen=True)
class Listed:
    workflow_id: str
    stage: str
    priority: str
    tenant: str
    payer: str = "-"
    status: str = "RUNNING"  # Temporal's execution status: RUNNING, COMPLETED, FAILED, TERMINATED, ...

    @property
    def open(self) -> bool:
        return self.status == "RUNNING"


async def list_pipeline(
    client: Client, pipeline: str, *, include_closed: bool = False, limit: int = 100
) -> list[Listed]:
    """The pipeline's open runs and those that failed; `include_closed` adds the completed ones."""
    query = f"CareflowPipeline = '{pipeline}'"
    if not include_closed:
        query += f" AND {OPEN_OR_FAILED}"
    rows = []
    async for wf in client.list_workflows(query, limit=limit):
        attrs = wf.search_attributes

        def one(name: str, attrs: Mapping[str, Sequence[object]] = attrs) -> str:
            return str((attrs.get(name) or ["-"])[0])

        status = wf.status.name if wf.status is not None else "RUNNING"
        stage, priority, tenant = one("CareflowStage"), one("CareflowPriority"), one("CareflowTenant")
        rows.append(Listed(wf.id, stage, priority, tenant, one("CareflowPayer"), status))
    return sorted(rows, key=lambda r: r.workflow_id)
