"""The MLLP listener: HL7 v2 messages in over TCP, an ACK out for each, only once durably accepted.

Each message type careflow takes has a `Route` (its parser and what accepts it), keyed by type and
trigger (`"ORU^R01"`); the pipelines declare theirs (workers/pipelines.py).  A type without a route
gets AE (unsupported message type).

Per connection, frames are handled in order (a sender expects ACKs in order); connections are
independent, so one slow or broken sender never blocks another.  For each frame:
- parses and its route's `accept` succeeds (its workflows were started or found) -> AA
- `Malformed` -> AR, `Unprocessable` -> AE, an oversize frame -> AR; nothing is started
- `accept` fails (Temporal unreachable, ...) -> no ACK and the connection is closed, so the lab
  system resends later: a result is never acknowledged without being durably accepted.
A client that goes silent mid-frame or idles past `idle_timeout` is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from careflow.hl7.ack import build_ack
from careflow.hl7.message import (
    UNSUPPORTED_MESSAGE_TYPE,
    HL7Rejection,
    MessageHeader,
    Unprocessable,
    component,
    envelope,
    read_header,
)
from careflow.hl7.mllp import DEFAULT_MAX_FRAME, Frame, MllpFramer, Oversize, wrap
from careflow.security.logging import get_logger

log = get_logger("careflow.hl7")


class Parsed(Protocol):
    header: MessageHeader


M = TypeVar("M", bound=Parsed)


@dataclass(frozen=True)
class Route(Generic[M]):
    parse: Callable[[bytes], M]  # raises Malformed (AR) or Unprocessable (AE)
    accept: Callable[[M], Awaitable[None]]  # returns once the message's work is durably started


@dataclass
class ListenerStats:
    connections: int = 0
    accepted: int = 0
    rejected: int = 0
    unacknowledged: int = 0
    timeouts: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


class MllpListener:
    def __init__(
        self,
        routes: Mapping[str, Route[Any]],
        *,
        host: str = "127.0.0.1",
        port: int = 2575,
        max_frame: int = DEFAULT_MAX_FRAME,
        idle_timeout: float = 60.0,
    ) -> None:
        self._routes = dict(routes)
        self.host, self.port = host, port
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self.stats = ListenerStats()
        self._server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=2**16)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        log.info("mllp listening", host=self.host, port=self.port)
        return self.host, self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        framer = MllpFramer(self.max_frame)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout=self.idle_timeout)
                except TimeoutError:
                    self.stats.timeouts += 1
                    log.warning("mllp client timed out", peer=str(peer), mid_frame=framer.mid_frame)
                    return
                if not data:
                    return
                for item in framer.feed(data):
                    ack = await self._process(item)
                    if ack is None:
                        return  # not durably accepted: close without ACK so the sender resends
                    writer.write(wrap(ack))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _process(self, item: Frame | Oversize) -> bytes | None:
        if isinstance(item, Oversize):
            return self._ack(
                "AR",
                build_ack(
                    "AR",
                    read_header(item.head),
                    reason=f"frame of {item.size} bytes exceeds the {self.max_frame}-byte limit",
                ),
            )
        try:
            route = self._route(item.payload)
            message = route.parse(item.payload)
        except HL7Rejection as rej:
            log.info("hl7 rejected", ack=rej.ack_code, reason=rej.reason, control_id=rej.control_id)
            return self._ack(
                rej.ack_code,
                build_ack(
                    rej.ack_code,
                    rej.header,
                    reason=rej.reason,
                    error_code=rej.error_code,
                    control_id=rej.control_id or "",
                ),
            )
        try:
            await route.accept(message)
        except Exception as exc:
            self.stats.unacknowledged += 1
            log.error(
                "hl7 not accepted, closing without ACK",
                control_id=message.header.control_id,
                error=type(exc).__name__,
            )
            return None
        self.stats.accepted += 1
        return self._ack("AA", build_ack("AA", message.header))

    def _route(self, payload: bytes) -> Route[Any]:
        """The route of the message's type, read from MSH alone: the route's parser runs the envelope
        checks once.  A type without a route is checked here, so garbage still gets AR, not AE."""
        header = read_header(payload)
        kind = "^".join(component(header.message_type, i) for i in (0, 1)) if header else ""
        route = self._routes.get(kind)
        if route is None:
            env = envelope(payload)  # Malformed (AR) before "unsupported type" (AE)
            known = ", ".join(sorted(self._routes)) or "none"
            reason = f"message type {env.header.message_type or 'empty'} is not one careflow takes ({known})"
            raise Unprocessable(reason, env.control_id, env.header, UNSUPPORTED_MESSAGE_TYPE)
        return route

    def _ack(self, code: str, ack: bytes) -> bytes:
        self.stats.by_code[code] = self.stats.by_code.get(code, 0) + 1
        if code != "AA":
            self.stats.rejected += 1
        return ack
