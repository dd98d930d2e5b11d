"""The PHI store (careflow/phi_store.py): encrypted at rest, streamed in frames, content-addressed, and
loud about any byte that was changed, reordered or cut; the upload's format check; the request limits
that let the audio route stream past the JSON body limit."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from careflow.phi_store import FRAME, PhiStore, PhiStoreError, TooLarge
from careflow.security.keys import Keyring
from starters.clients.ambient import audio_format, store_audio


def keyring(*kids: str, active: str | None = None) -> Keyring:
    spec = ",".join(f"{k}:{base64.b64encode(bytes([i + 1]) * 32).decode()}" for i, k in enumerate(kids))
    return Keyring.parse(spec, active)


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_stored_encrypted_in_frames_and_read_back(tmp_path: Path) -> None:
    store = PhiStore(tmp_path, keyring("k1"))
    data = os.urandom(2 * FRAME + 12345)  # three frames
    stored = await store.put_stream("audio", chunks(data), max_bytes=10 * FRAME)
    assert stored.size == len(data) and stored.ref.startswith("audio/")
    raw = (tmp_path / stored.ref).read_bytes()
    assert data[:64] not in raw and raw.startswith(b"CFPHI1")  # nothing in the clear
    assert store.read(stored.ref) == data
    assert [len(f) for f in store.frames(stored.ref)] == [FRAME, FRAME, 12345]
    # the same bytes again: the same reference, one file
    again = store.put("audio", data)
    assert again.ref == stored.ref and len(list((tmp_path / "audio").iterdir())) == 1


async def test_too_large_keeps_nothing(tmp_path: Path) -> None:
    store = PhiStore(tmp_path, keyring("k1"))
    with pytest.raises(TooLarge):
        await store.put_stream("audio", chunks(os.urandom(300_000)), max_bytes=200_000)
    assert list((tmp_path / "audio").iterdir()) == []  # no partial file left behind


def test_altered_reordered_or_cut_files_are_refused(tmp_path: Path) -> None:
    store = PhiStore(tmp_path, keyring("k1"))
    ref = store.put("transcript", os.urandom(FRAME + 10)).ref
    path = tmp_path / ref
    original = path.read_bytes()

    flipped = bytearray(original)
    flipped[-5] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(PhiStoreError, match="frame 1 fails authentication"):
        store.read(ref)

    head = len(b"CFPHI1") + 1 + len(b"k1")
    first_len = int.from_bytes(original[head : head + 4], "big")
    first = original[head : head + 17 + first_len]
    path.write_bytes(original[:head] + first)  # the last frame dropped
    with pytest.raises(PhiStoreError, match="cut off after frame 1"):
        store.read(ref)

    second = original[head + 17 + first_len :]
    path.write_bytes(original[:head] + second + first)  # frames swapped
    with pytest.raises(PhiStoreError, match="fails authentication"):
        store.read(ref)


def test_rotated_keys_still_read_and_a_missing_key_is_named(tmp_path: Path) -> None:
    old = PhiStore(tmp_path, keyring("k1")).put("audio", b"recorded under k1")
    both = PhiStore(tmp_path, keyring("k1", "k2", active="k2"))
    assert both.read(old.ref) == b"recorded under k1"
    new = both.put("audio", b"recorded under k2")
    with pytest.raises(PhiStoreError, match="encrypted with key 'k2', which is not configured"):
        PhiStore(tmp_path, keyring("k1")).read(new.ref)
    with pytest.raises(PhiStoreError, match="not a PHI store reference"):
        both.read("../../etc/passwd")
    assert both.delete(new.ref) and not both.exists(new.ref) and not both.delete(new.ref)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"RIFF\x24\x08\x00\x00WAVEfmt ", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg"),
        (b"RIFF\x24\x08\x00\x00AVI LIST", None),
        (b"ID3\x03\x00", None),
        (b'{"text": 1}', None),
    ],
)
def test_audio_format_by_magic_bytes(head: bytes, kind: str | None) -> None:
    assert audio_format(head) == kind


async def test_an_upload_that_is_not_audio_is_not_kept(tmp_path: Path) -> None:
    store = PhiStore(tmp_path, keyring("k1"))
    stored, kind = await store_audio(store, chunks(b"name,dob\nJane,1950-01-01\n" * 100, size=7), 10**6)
    assert kind is None and not store.exists(stored.ref)
    flac, kind = await store_audio(store, chunks(b"fLaC" + os.urandom(5000), size=3), 10**6)
    assert kind == "flac" and store.exists(flac.ref)  # the magic split across chunks is still seen
