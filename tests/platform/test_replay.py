"""Replay every recorded history with a Replayer configured exactly like the workers.

A workflow change that breaks replay fails here; use `workflow.patched` for such changes.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.workflow import NondeterminismError

from careflow.config import Settings
from workers.registry import ALL_WORKFLOWS, replayer

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def workflow_type(path: Path) -> str:
    first = json.loads(path.read_text())["events"][0]
    return first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def test_every_workflow_type_has_a_history() -> None:
    recorded = {workflow_type(p) for p in HISTORIES}
    registered = {wf.__temporal_workflow_definition.name for wf in ALL_WORKFLOWS}  # type: ignore[attr-defined]
    assert registered <= recorded, f"no recorded history for {sorted(registered - recorded)}"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    result = await replayer(Settings()).replay_workflow(load(path))
    assert result.replay_failure is None


# A planted incompatible change: same workflow type, but it schedules no probe activity and
# sleeps instead, so the recorded ActivityTaskScheduled events no longer match the commands.
@workflow.defn(name="PlatformCanaryWorkflow", sandboxed=False)
class IncompatibleCanary:
    @workflow.run
    async def run(self, inp: dict) -> dict:
        await workflow.sleep(timedelta(seconds=1))
        return {"healthy": True}


async def test_incompatible_change_raises_nondeterminism() -> None:
    path = next(p for p in HISTORIES if workflow_type(p) == "PlatformCanaryWorkflow")
    with pytest.raises(NondeterminismError):
        await replayer(Settings(), workflows=[IncompatibleCanary]).replay_workflow(load(path))
