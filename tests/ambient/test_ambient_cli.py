"""`careflow ambient ...` as a user runs it (a subprocess against the session's dev server): what it
cannot take is refused with a one-line reason and exit status 1, before any workflow starts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client

from tests.support.cli import run_careflow


async def careflow(*args: str) -> tuple[int, str]:
    proc = await asyncio.to_thread(run_careflow, *args)
    return proc.returncode, proc.stdout + proc.stderr


async def test_what_the_cli_cannot_take_is_refused_with_the_reason(client: Client, tmp_path: Path) -> None:
    untagged = tmp_path / "visit.txt"
    untagged.write_text("Good morning. My knee hurts.")
    rc, out = await careflow("ambient", "submit", str(untagged), "--transcript", "--encounter", "enc-cli-1")
    assert rc == 1 and "labels every turn with its speaker" in out

    not_audio = tmp_path / "visit.flac"
    not_audio.write_bytes(b"%PDF-1.7 not a recording")
    rc, out = await careflow("ambient", "submit", str(not_audio), "--encounter", "enc-cli-1")
    assert rc == 1 and "not WAV, FLAC or OGG audio" in out

    rc, out = await careflow("ambient", "codes", "enc-cli-1", "--coder", "c-1", "--add", "NOT-A-CODE")
    assert rc == 1 and "not ICD-10-CM codes: NOT-A-CODE" in out

    rc, out = await careflow("ambient", "show", "enc-cli-404")
    assert (
        rc == 1
        and "no ambient note workflow ambient-note-enc-cli-404" in out
        and "careflow ambient list" in out
    )
    # nothing was started by any of it
    found = [w async for w in client.list_workflows("WorkflowId STARTS_WITH 'ambient-note-enc-cli'")]
    assert found == []
