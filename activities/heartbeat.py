"""Long activity work that reports progress: a slow step must never look like a dead worker."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import activity

T = TypeVar("T")
HEARTBEAT_EVERY = 5.0


async def beating(work: Callable[[], T] | Awaitable[T], progress: dict[str, Any]) -> T:
    """Run blocking work in a thread (or await `work`), heartbeating `progress` (read at each beat, so
    the work may update it) on a timer."""
    job = asyncio.ensure_future(work if inspect.isawaitable(work) else asyncio.to_thread(work))
    while not job.done():
        activity.heartbeat(dict(progress))
        await asyncio.wait([job], timeout=HEARTBEAT_EVERY)
    return job.result()
