"""AES-256-GCM payload codec with key ids, so keys can rotate.

Each encoded payload is the serialized original Payload, encrypted, with metadata
`encoding=binary/encrypted` and `encryption-key-id=<kid>`.  Decoding picks the key by that id, so
histories written under an old key still decode after rotation as long as the old key stays in
the keyring.  Payloads without our encoding (plain JSON sent by `temporal workflow start --input`)
pass through untouched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from careflow.security.keys import Keyring

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class PayloadDecryptError(Exception):
    """A payload could not be decrypted (unknown key id or tampered ciphertext)."""


class EncryptionCodec(PayloadCodec):
    def __init__(self, keyring: Keyring) -> None:
        self._active = keyring.active_id
        self._ciphers = {kid: AESGCM(key) for kid, key in keyring.keys.items()}

    @property
    def active_key_id(self) -> str:
        return self._active

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._active]
        out = []
        for p in payloads:
            nonce = os.urandom(NONCE_BYTES)
            # The key id is bound as associated data: a payload cannot be replayed under another key id.
            data = nonce + cipher.encrypt(nonce, p.SerializeToString(), self._active.encode())
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID: self._active.encode()}, data=data))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            kid = p.metadata.get(KEY_ID, b"").decode()
            cipher = self._ciphers.get(kid)
            if cipher is None:
                raise PayloadDecryptError(f"payload encrypted with unknown key id {kid!r}")
            try:
                plain = cipher.decrypt(p.data[:NONCE_BYTES], p.data[NONCE_BYTES:], kid.encode())
            except InvalidTag:
                raise PayloadDecryptError(f"payload under key id {kid!r} failed authentication") from None
            out.append(Payload.FromString(plain))
        return out
