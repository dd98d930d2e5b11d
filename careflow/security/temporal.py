"""The one way careflow talks to Temporal: the data converter and the client connection.

Clients, workers, the Replayer and the test environments all take `data_converter(settings)`, so a
payload written by any of them decodes in all of them.
"""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from careflow.config import ConfigError, Settings
from careflow.security.codec import EncryptionCodec
from careflow.security.keys import payload_keyring


def data_converter(settings: Settings) -> DataConverter:
    """pydantic v2 JSON payloads, AES-GCM encrypted."""
    return dataclasses.replace(
        pydantic_data_converter, payload_codec=EncryptionCodec(payload_keyring(settings))
    )


def _read(path_setting: str, path: object) -> bytes:
    try:
        with open(str(path), "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(path_setting, f"cannot read {path}: {exc.strerror}") from None


def tls_config(settings: Settings) -> TLSConfig | bool:
    if settings.temporal_tls_cert is not None:
        return TLSConfig(
            client_cert=_read("CAREFLOW_TEMPORAL_TLS_CERT", settings.temporal_tls_cert),
            client_private_key=_read("CAREFLOW_TEMPORAL_TLS_KEY", settings.temporal_tls_key),
            server_root_ca_cert=(
                _read("CAREFLOW_TEMPORAL_TLS_CA", settings.temporal_tls_ca)
                if settings.temporal_tls_ca
                else None
            ),
        )
    return settings.temporal_tls_enabled


async def connect(
    settings: Settings, *, identity: str | None = None, runtime: Runtime | None = None
) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key,
        tls=tls_config(settings),
        data_converter=data_converter(settings),
        identity=identity,
        runtime=runtime,
    )
