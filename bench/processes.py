"""Worker processes for benchmarks: `python -m <module> ...` that print READY once they poll."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def start_ready_processes(
    module_args: Sequence[str], count: int, timeout: float = 60.0
) -> list[asyncio.subprocess.Process]:
    """Start `count` processes of `python -m module_args...` and wait until each says READY."""
    procs = []
    for _ in range(count):
        p = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *module_args,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), timeout)
        if line.strip() != b"READY":
            raise RuntimeError(f"bench process {' '.join(module_args)} did not start")
        procs.append(p)
    return procs
