"""A test's worker in a process of its own: `python -m tests.support.<module> ARGS...`, started and
awaited until it prints READY (connected and polling), so a test can kill it or signal it for real."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def start_ready(
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    stderr: int = subprocess.DEVNULL,
    timeout: float = 60,
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"tests.support.{module}", *args, cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=stderr,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=timeout)
    assert line.strip() == b"READY", line
    return proc
