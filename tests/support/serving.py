"""Serve an ASGI app over real HTTP on a free loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def serve(app: Any, port: int = 0, **config: Any) -> AsyncIterator[str]:
    """Run `app` with uvicorn on 127.0.0.1:<port> (0: a free one); yields its root URL."""
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (uvicorn's own listener is one);
    # without it, small responses wait ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a server started again on its port
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    # log_config=None, as `careflow api` runs: uvicorn leaves the process's logging configuration alone.
    defaults = {"log_level": "warning", "lifespan": "on", "log_config": None}
    server = uvicorn.Server(uvicorn.Config(app, **{**defaults, **config}))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped the server
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
