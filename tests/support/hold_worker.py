"""`python -m tests.support.hold_worker QUEUE`: careflow's real worker runtime serving HoldWorkflow."""

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
            ready=lambda: print("READY", flush=True),
        )
    )
