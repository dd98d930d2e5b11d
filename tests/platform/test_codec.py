import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload

from careflow.config import ConfigError
from careflow.security.codec import ENCODING, EncryptionCodec, PayloadDecryptError
from careflow.security.keys import Keyring, new_key_spec


def ring(*kids: str, active: str | None = None) -> Keyring:
    return Keyring.parse(",".join(new_key_spec(k) for k in kids), active)


def plain(data: bytes) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


async def test_round_trip_encrypts_and_names_the_key() -> None:
    codec = EncryptionCodec(ring("k1"))
    [enc] = await codec.encode([plain(b'{"mrn":"12345"}')])
    assert enc.metadata["encoding"] == ENCODING
    assert enc.metadata["encryption-key-id"] == b"k1"
    assert b"12345" not in enc.data
    assert await codec.decode([enc]) == [plain(b'{"mrn":"12345"}')]


async def test_rotation_old_key_still_decrypts() -> None:
    old = ring("k1")
    [enc_old] = await EncryptionCodec(old).encode([plain(b"1")])
    rotated = Keyring.parse(old.spec() + "," + new_key_spec("k2"), "k2")
    codec = EncryptionCodec(rotated)
    [enc_new] = await codec.encode([plain(b"2")])
    assert enc_new.metadata["encryption-key-id"] == b"k2"
    assert [p.data for p in await codec.decode([enc_old, enc_new])] == [b"1", b"2"]


async def test_unknown_key_and_tampering_are_refused() -> None:
    [enc] = await EncryptionCodec(ring("k1")).encode([plain(b"x")])
    with pytest.raises(PayloadDecryptError, match="unknown key id"):
        await EncryptionCodec(ring("other")).decode([enc])
    tampered = Payload()
    tampered.CopyFrom(enc)
    tampered.data = enc.data[:-1] + bytes([enc.data[-1] ^ 1])
    with pytest.raises(PayloadDecryptError, match="failed authentication"):
        await EncryptionCodec(ring("k1")).decode([tampered])


async def test_plain_json_payloads_pass_through() -> None:
    # What `temporal workflow start --input '{...}'` sends: unencrypted json/plain.
    p = plain(b'{"order_id":"A1"}')
    assert await EncryptionCodec(ring("k1")).decode([p]) == [p]


@given(st.binary(max_size=4096), st.dictionaries(st.text(min_size=1, max_size=8), st.binary(max_size=16)))
async def test_any_payload_round_trips(data: bytes, meta: dict[str, bytes]) -> None:
    codec = EncryptionCodec(ring("k1"))
    p = Payload(metadata=meta, data=data)
    assert await codec.decode(await codec.encode([p])) == [p]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("nokeyid", "<key id>:<base64 key>"),
        ("k1:!!notbase64", "not valid base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "must be 32 bytes"),
    ],
)
def test_bad_key_spec_is_a_config_error(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        Keyring.parse(spec, None)
    assert info.value.setting == "CAREFLOW_PAYLOAD_KEYS"


def test_active_key_must_exist() -> None:
    with pytest.raises(ConfigError) as info:
        Keyring.parse(new_key_spec("k1"), "k9")
    assert info.value.setting == "CAREFLOW_PAYLOAD_KEY_ID"
