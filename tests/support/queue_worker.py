"""`python -m tests.support.queue_worker DECLARED QUEUE`: careflow's real worker runtime serving the
activities a pipeline declares for its own queue DECLARED (careflow-stt, careflow-gpu), polling QUEUE:
the process a kill -9 test kills mid-transcription or mid-training."""

import asyncio
import sys

from careflow.config import load_settings
from careflow.security.logging import configure_logging
from workers.main import run_worker
from workers.registry import activities_for, activity_slots

if __name__ == "__main__":
    declared, queue = sys.argv[1], sys.argv[2]
    settings = load_settings()
    configure_logging("INFO", "json")
    asyncio.run(
        run_worker(
            settings,
            queue,
            workflows=[],
            activities=lambda c: activities_for(declared, c),
            slots=activity_slots(declared),
            ready=lambda: print("READY", flush=True),
        )
    )
