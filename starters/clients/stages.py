"""Following a long workflow from a command line: its result, each stage reported as it is entered
(read through the workflow's own progress query); or its status polled until it says enough."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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


S = TypeVar("S")


async def poll_until(fetch: Callable[[], Awaitable[S]], done: Callable[[S], bool], timeout: float,
                     every: float = 0.5) -> S:  # fmt: skip
    """`fetch()` every `every` seconds until `done` says so or `timeout` has passed; its last answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await fetch()
        if done(got) or loop.time() > deadline:
            return got
        await asyncio.sleep(every)
