"""Models of the platform canary: the end-to-end health probe of every task queue."""

from __future__ import annotations

from pydantic import BaseModel, Field

PIPELINE = "platform-canary"
WORKFLOW_ID_PREFIX = "platform-canary-"  # + the start time: every check is a new run


class CanaryInput(BaseModel):
    # Empty means: only the task queue the canary itself runs on.
    task_queues: list[str] = Field(default_factory=list)
    probe_timeout_seconds: float = Field(30.0, gt=0)


class ProbeInput(BaseModel):
    task_queue: str
    probe_key: str  # workflow id + queue: a retried probe writes the same row


class ProbeResult(BaseModel):
    task_queue: str
    worker_identity: str
    database_ok: bool
    pgvector_version: str | None = None
    codec_ok: bool
    codec_key_id: str | None = None
    error: str | None = None


class CanaryOutput(BaseModel):
    healthy: bool
    probes: list[ProbeResult] = Field(default_factory=list)
    # task queue -> why it could not be probed (no worker polling it, activity failed)
    unreachable: dict[str, str] = Field(default_factory=dict)
