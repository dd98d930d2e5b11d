"""Models of the failback (seed P20): `DRFailbackWorkflow`, one per incident (`dr-failback-<incident>`):
after a failover, the fenced site rebuilt as a standby of the new primary, then, when an operator says
so, a planned switchover back to it and the other site rebuilt in turn."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from careflow.models.dr import Site

FAILBACK_ID_PREFIX = "dr-failback-"


def failback_id(incident: str) -> str:
    return FAILBACK_ID_PREFIX + incident


class FailbackInput(BaseModel):
    # The failover's incident; its switchover back is `<incident>-return`, an incident id too (<= 64).
    incident: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,56}$")
    requested_by: str = Field(min_length=1, max_length=64)
    synchronous: bool = False  # the rebuilt standby's commit mode
    return_now: bool = False  # switch back as soon as the standby streams, without waiting to be told
    wait_hours: float = Field(72, gt=0)  # no `return_to_site` by then: the standby stays, roles unchanged
    search_attributes: bool = True
    canary_queues: list[str] | None = None  # the switchover back's canary (FailoverInput's)


class RebuildRequest(BaseModel):
    workflow_id: str
    incident: str
    primary_url: str  # the site that stays the primary (credential-free)
    standby_url: str  # the site rebuilt as its standby
    synchronous: bool


class Rebuilt(BaseModel):
    standby_url: str
    state: str  # streaming
    sync: str  # sync, async
    lag_bytes: int
    seconds: float  # cloning to streaming
    cloned: bool  # False: it already streamed from this primary (nothing done)


class FailbackStatus(BaseModel):
    incident: str
    stage: str = (
        "assessing"  # rebuilding, standing-by, switching-back, returned, rebuilt, refused, return-failed
    )
    reason: str = ""
    primary: Site | None = None
    rebuilt: list[Rebuilt] = []
    returned_by: str | None = None
    stages: list[tuple[str, datetime]] = Field(default_factory=list)
