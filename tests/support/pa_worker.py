"""`python -m tests.support.pa_worker QUEUE [MARKER_DIR]`: careflow's real worker runtime with the
careflow-main workflows and activities on QUEUE (settings from the environment).

With MARKER_DIR the process hangs right after it has written a prior-auth review Task (the step's
result never reaches Temporal) and drops `task-written-<pid>` there, so a test can kill -9 it mid-step.
"""

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from careflow import task_queues
from careflow.config import load_settings
from careflow.fhir.client import FhirClient
from careflow.security.logging import configure_logging
from workers.main import run_worker
from workers.registry import activities_for, workflows_for


def hang_after_review_task(marker_dir: Path) -> None:
    original = FhirClient.conditional_create

    async def conditional_create(
        self: FhirClient, resource: dict[str, Any], identifier: str, **kw: Any
    ) -> Any:
        result = await original(self, resource, identifier, **kw)
        if identifier.endswith("/review-task"):
            (marker_dir / f"task-written-{os.getpid()}").touch()
            await asyncio.sleep(3600)
        return result

    FhirClient.conditional_create = conditional_create  # type: ignore[method-assign]


if __name__ == "__main__":
    if len(sys.argv) > 2:
        hang_after_review_task(Path(sys.argv[2]))
    settings = load_settings()
    configure_logging("WARNING", "json")
    asyncio.run(
        run_worker(
            settings,
            sys.argv[1],
            workflows=workflows_for(task_queues.MAIN),
            activities=lambda c: activities_for(task_queues.MAIN, c),
            ready=lambda: print("READY", flush=True),
        )
    )
