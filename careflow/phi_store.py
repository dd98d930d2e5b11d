"""careflow's PHI store: encrypted files at rest for what is too large to travel in Temporal payloads
and too sensitive to leave unencrypted anywhere (an encounter's audio, its transcript).

Workflows carry only a reference (`audio/<sha256>`): Temporal warns at 256 KB a payload and fails at
2 MB, and an encounter's audio is tens of MB.  (temporalio's `converter.ExternalStorage` offloads whole
payloads above a size to a driver; the audio here never becomes a payload at all, so the reference
stays explicit and the bytes stay where the upload streamed them.)

Format: `CFPHI1`, the key id, then frames of at most 1 MiB, each AES-256-GCM with its own nonce and the
frame's index (and whether it is the last) as associated data, so frames cannot be reordered,
dropped or cut off unnoticed.  Keys are the payload keyring's (CAREFLOW_PAYLOAD_KEYS): rotation works
the same way.  A reference is the SHA-256 of the plaintext, so storing the same bytes twice (a
re-upload, a retried activity) gives the same reference and one file.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from careflow.config import Settings
from careflow.security.keys import Keyring, payload_keyring

MAGIC = b"CFPHI1"
FRAME = 1024 * 1024
_REF = re.compile(r"^(?P<kind>[a-z][a-z0-9-]{0,31})/(?P<digest>[0-9a-f]{64})$")


class PhiStoreError(Exception):
    pass


class TooLarge(PhiStoreError):
    pass


@dataclass(frozen=True)
class Stored:
    ref: str  # `<kind>/<sha256 of the plaintext>`
    size: int  # plaintext bytes


def _aad(index: int, last: bool) -> bytes:
    return struct.pack(">Q?", index, last)


class PhiStore:
    def __init__(self, root: Path, keyring: Keyring) -> None:
        self._root = root
        self._keys = keyring

    @classmethod
    def of(cls, settings: Settings) -> PhiStore:
        return cls(settings.state_dir / "phi", payload_keyring(settings))

    def _path(self, ref: str) -> Path:
        m = _REF.match(ref)
        if m is None:
            raise PhiStoreError(f"not a PHI store reference: {ref!r}")
        return self._root / m["kind"] / m["digest"]

    def exists(self, ref: str) -> bool:
        return self._path(ref).is_file()

    async def put_stream(self, kind: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> Stored:
        """Encrypt `chunks` to disk as they come (never whole in memory); TooLarge past `max_bytes`."""
        writer = _Writer(self._root / kind, self._keys)
        try:
            async for chunk in chunks:
                writer.add(chunk)
                if writer.size > max_bytes:
                    raise TooLarge(f"more than {max_bytes} bytes")
            return self._finish(kind, writer)
        finally:
            writer.discard()

    def put(self, kind: str, data: bytes) -> Stored:
        writer = _Writer(self._root / kind, self._keys)
        try:
            writer.add(data)
            return self._finish(kind, writer)
        finally:
            writer.discard()

    def _finish(self, kind: str, writer: _Writer) -> Stored:
        digest = writer.close()
        ref = f"{kind}/{digest}"
        target = self._path(ref)
        if not target.exists():
            os.replace(writer.tmp, target)  # atomic: a reader sees the whole file or none
        return Stored(ref, writer.size)

    def frames(self, ref: str) -> Iterator[bytes]:
        """The plaintext, frame by frame; PhiStoreError if any frame was altered, reordered or cut."""
        path = self._path(ref)
        if not path.is_file():
            raise PhiStoreError(f"{ref}: not in the PHI store")
        with path.open("rb") as fh:
            if fh.read(len(MAGIC)) != MAGIC:
                raise PhiStoreError(f"{ref}: not a PHI store file")
            kid = fh.read(fh.read(1)[0]).decode()
            key = self._keys.keys.get(kid)
            if key is None:
                raise PhiStoreError(f"{ref}: encrypted with key {kid!r}, which is not configured")
            aead, index, last = AESGCM(key), 0, False
            while not last:
                head = fh.read(17)
                if len(head) < 17:
                    raise PhiStoreError(f"{ref}: cut off after frame {index}")
                length, last = struct.unpack(">I?", head[:5])
                nonce, body = head[5:], fh.read(length)
                try:
                    yield aead.decrypt(nonce, body, _aad(index, last))
                except InvalidTag:
                    raise PhiStoreError(f"{ref}: frame {index} fails authentication") from None
                index += 1

    def read(self, ref: str) -> bytes:
        return b"".join(self.frames(ref))

    def delete(self, ref: str) -> bool:
        """Remove the object (no consent, retention); True if it was there."""
        try:
            self._path(ref).unlink()
        except FileNotFoundError:
            return False
        return True


class _Writer:
    """Frames of FRAME plaintext bytes, encrypted into a temporary file beside the target."""

    def __init__(self, folder: Path, keys: Keyring) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        self.tmp = Path(name)
        self._fh = os.fdopen(fd, "wb")
        kid = keys.active_id.encode()
        self._fh.write(MAGIC + bytes([len(kid)]) + kid)
        self._aead = AESGCM(keys.keys[keys.active_id])
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self._index = 0
        self.size = 0

    def add(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        self._pending += data
        while len(self._pending) > FRAME:
            self._frame(bytes(self._pending[:FRAME]), last=False)
            del self._pending[:FRAME]

    def _frame(self, plain: bytes, *, last: bool) -> None:
        nonce = os.urandom(12)
        body = self._aead.encrypt(nonce, plain, _aad(self._index, last))
        self._fh.write(struct.pack(">I?", len(body), last) + nonce + body)
        self._index += 1

    def close(self) -> str:
        self._frame(bytes(self._pending), last=True)
        self._pending.clear()
        self._fh.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)
