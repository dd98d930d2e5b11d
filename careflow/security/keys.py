"""Key material: payload-encryption keys and codec-endpoint tokens.

Production passes both in settings.  In `dev`, careflow creates them once under
`<home>/secrets/` (mode 0600) so that every process of the embedded stack shares them and a
restart can still decrypt old workflow histories.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from careflow.config import ConfigError, Settings

KEY_BYTES = 32  # AES-256-GCM


@dataclass(frozen=True)
class Keyring:
    """Every key that may decrypt; `active_id` names the one that encrypts."""

    active_id: str
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, spec: str, active_id: str | None, setting: str = "CAREFLOW_PAYLOAD_KEYS") -> Keyring:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in filter(None, (p.strip() for p in spec.split(","))):
            kid, sep, b64 = item.partition(":")
            if not sep or not kid:
                raise ConfigError(setting, "each entry must be <key id>:<base64 key>")
            try:
                key = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(setting, f"key {kid!r} is not valid base64") from None
            if len(key) != KEY_BYTES:
                raise ConfigError(setting, f"key {kid!r} must be {KEY_BYTES} bytes, got {len(key)}")
            keys[kid] = key
            order.append(kid)
        if not keys:
            raise ConfigError(setting, "no keys given")
        active = active_id or order[0]
        if active not in keys:
            raise ConfigError("CAREFLOW_PAYLOAD_KEY_ID", f"{active!r} is not one of the configured keys")
        return cls(active_id=active, keys=keys)

    def spec(self) -> str:
        return ",".join(f"{k}:{base64.b64encode(v).decode()}" for k, v in self.keys.items())


def new_key_spec(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def dev_secret(settings: Settings, name: str, make: str) -> str:
    """`<home>/secrets/<name>`, created once with `make` (mode 0600) and shared by every process."""
    path = Path(settings.state_dir) / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(make)
    return path.read_text().strip()


def payload_keyring(settings: Settings) -> Keyring:
    if settings.payload_keys is not None:
        return Keyring.parse(settings.payload_keys.get_secret_value(), settings.payload_key_id)
    if settings.environment != "dev":
        raise ConfigError("CAREFLOW_PAYLOAD_KEYS", "required when CAREFLOW_ENVIRONMENT=production")
    spec = dev_secret(settings, "payload.keys", new_key_spec("dev-1"))
    return Keyring.parse(spec, settings.payload_key_id, setting=f"{settings.state_dir}/secrets/payload.keys")


def pseudonymizer(settings: Settings) -> Callable[[str, str], str]:
    """`pseudonym(kind, value)`: a keyed hash (HMAC-SHA256) that names an identifier where its raw
    value may not go (`mrn-3f2a...`): the same value gives the same name, nobody without the key can
    recover or test a guess."""
    if settings.pseudonym_key is not None:
        key = settings.pseudonym_key.get_secret_value()
    elif settings.environment != "dev":
        raise ConfigError("CAREFLOW_PSEUDONYM_KEY", "required when CAREFLOW_ENVIRONMENT=production")
    else:
        key = dev_secret(settings, "pseudonym.key", secrets.token_urlsafe(32))

    def pseudonym(kind: str, value: str) -> str:
        digest = hmac.new(key.encode(), f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}-{digest[:24]}"

    return pseudonym


def codec_tokens(settings: Settings) -> list[str]:
    if settings.codec_tokens is not None:
        tokens = [t.strip() for t in settings.codec_tokens.get_secret_value().split(",") if t.strip()]
        if not tokens:
            raise ConfigError("CAREFLOW_CODEC_TOKENS", "no token given")
        return tokens
    if settings.environment != "dev":
        raise ConfigError("CAREFLOW_CODEC_TOKENS", "required when CAREFLOW_ENVIRONMENT=production")
    return [dev_secret(settings, "codec.token", secrets.token_urlsafe(32))]
