"""`python -m tests.support.hold_worker QUEUE [SLOTS]`: careflow's real worker runtime serving HoldWorkflow
(SLOTS: how many activities it runs at once)."""

import asyncio
import sys

from careflow.config import load_settings
from careflow.security.logging import configure_logging
from tests.support.hold import HoldWorkflow, hold
from workers.main import run_worker

if __name__ == "__main__":
    settings = load_settings()
    configure_logging("INFO", "json")
    asyncio.run(
        run_worker(
            settings,
            sys.argv[1],
            workflows=[HoldWorkflow],
            activities=lambda c: [hold],
            slots=int(sys.argv[2]) if len(sys.argv) > 2 else None,
            ready=lambda: print("READY", flush=True),
        )
    )
