"""Run the `careflow` command as a user would: a subprocess of this interpreter from the project root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def run_careflow(
    *args: str,
    columns: int = 200,
    timeout: float = 180,
    env: dict[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`careflow ARGS` with `base` (default: this process's environment) plus `env`, at COLUMNS=`columns`."""
    return subprocess.run(
        [sys.executable, "-m", "starters", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**(os.environ if base is None else base), "COLUMNS": str(columns), **(env or {})},
    )
