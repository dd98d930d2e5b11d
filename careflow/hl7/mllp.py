"""MLLP framing: <VT> message <FS><CR>.

`MllpFramer` is a push parser that never holds more than `max_frame` bytes: a frame that grows past
it is dropped up to its end marker and reported as `Oversize`, so one bad sender cannot exhaust
memory or block the messages after it on the same connection.  Bytes outside a frame are counted
and skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
DEFAULT_MAX_FRAME = 1024 * 1024  # 1 MiB: an ORU is a few KB; embedded PDFs belong in a document store


@dataclass(frozen=True)
class Frame:
    payload: bytes


@dataclass(frozen=True)
class Oversize:
    """A frame larger than the limit; `head` keeps its first bytes so MSH-10 can still be echoed."""

    size: int
    head: bytes


def wrap(message: bytes) -> bytes:
    return START + message + END


class MllpFramer:
    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._in_frame = False
        self._dropped = 0  # bytes dropped of the current oversize frame (0: not dropping)
        self._head = b""
        self.junk_bytes = 0

    @property
    def mid_frame(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> Iterator[Frame | Oversize]:
        pos = 0
        while pos < len(data):
            if not self._in_frame:
                start = data.find(START, pos)
                if start < 0:
                    self.junk_bytes += len(data) - pos
                    return
                self.junk_bytes += start - pos
                pos = start + 1
                self._in_frame = True
                continue
            # Search from one byte back: the end marker may be split across two reads.
            search_from = len(self._buf) - 1 if self._buf else 0
            self._buf += data[pos:]
            pos = len(data)
            end = self._buf.find(END, max(search_from, 0))
            if end < 0:
                if len(self._buf) > self.max_frame:
                    self._drop(len(self._buf) - 1)
                continue
            rest = bytes(self._buf[end + len(END) :])
            frame = bytes(self._buf[:end])
            self._buf.clear()
            self._in_frame = False
            if self._dropped:
                yield Oversize(size=self._dropped + len(frame), head=self._head)
                self._dropped, self._head = 0, b""
            elif START in frame:
                # The sender restarted mid-frame (e.g. after a reconnect): keep the newest frame only.
                cut = frame.rfind(START)
                self.junk_bytes += cut + 1
                yield Frame(frame[cut + 1 :])
            elif len(frame) > self.max_frame:
                yield Oversize(size=len(frame), head=frame[:4096])
            else:
                yield Frame(frame)
            data, pos = rest, 0

    def _drop(self, count: int) -> None:
        """Forget all but the last byte of an oversize frame (it may be the first half of the end marker)."""
        if not self._dropped:
            self._head = bytes(self._buf[:4096])
        self._dropped += count
        del self._buf[:count]
