"""Following a long workflow from a command line: its result, each stage reported as it is entered
(read through the workflow's own progress query)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, TypeVar


class Staged(Protocol):
    stage: str


R = TypeVar("R", bound=Staged)


async def follow(
    handle: Any, query: Callable[..., R], on_stage: Callable[[R], None], every: float = 1.0
) -> R:
    """`handle`'s result; `on_stage` with the `query`'s answer each time its stage changes."""
    result = asyncio.ensure_future(handle.result())
    seen = ""
    while not result.done():
        progress: R = await handle.query(query)
        if progress.stage != seen:
            seen = progress.stage
            on_stage(progress)
        await asyncio.wait([result], timeout=every)
    done: R = result.result()
    return done
