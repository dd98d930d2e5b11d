"""`python -m tests.support.stt_worker QUEUE`: careflow's real worker runtime serving the speech
activities (transcribe, diarize) on QUEUE: the process the kill -9 test kills mid-transcription."""

import asyncio
import sys

from careflow.config import load_settings
from careflow.security.logging import configure_logging
from workers.main import run_worker
from workers.pipelines import AMBIENT
from workers.registry import building_block_activities

if __name__ == "__main__":
    settings = load_settings()
    configure_logging("INFO", "json")
    [speech] = AMBIENT.queues.values()
    asyncio.run(
        run_worker(
            settings,
            sys.argv[1],
            workflows=[],
            activities=lambda c: [*building_block_activities(c), *speech.activities(c)],
            slots=speech.slots,
            ready=lambda: print("READY", flush=True),
        )
    )
