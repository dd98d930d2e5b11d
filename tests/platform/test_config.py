import subprocess
import sys

import pytest

from careflow.config import ConfigError, load_settings


def test_defaults_point_at_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CAREFLOW_TEMPORAL_ADDRESS", "CAREFLOW_DATABASE_URL", "CAREFLOW_TEMPORAL_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    s = load_settings()
    assert s.temporal_address == "127.0.0.1:7233"
    assert s.temporal_namespace == "careflow"
    assert s.database_url.startswith("postgresql://") and "127.0.0.1" in s.database_url
    assert not s.temporal_tls_enabled


def test_temporal_cli_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAREFLOW_TEMPORAL_ADDRESS", raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.example.org:7233")
    monkeypatch.setenv("TEMPORAL_API_KEY", "k")
    s = load_settings()
    assert s.temporal_address == "temporal.example.org:7233"
    assert s.temporal_tls_enabled  # an API key implies TLS (Temporal Cloud)


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("CAREFLOW_TEMPORAL_ADDRESS", "no-port-here", "CAREFLOW_TEMPORAL_ADDRESS"),
        ("CAREFLOW_DATABASE_URL", "mysql://x", "CAREFLOW_DATABASE_URL"),
        ("CAREFLOW_API_PORT", "99999", "CAREFLOW_API_PORT"),
        ("CAREFLOW_LOG_LEVEL", "LOUD", "CAREFLOW_LOG_LEVEL"),
        ("CAREFLOW_TEMPORAL_TLS_CERT", "/tmp/cert.pem", "CAREFLOW_TEMPORAL_TLS_KEY"),
    ],
)
def test_bad_setting_is_one_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, named: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.setting == named
    assert "\n" not in str(info.value)


def test_cli_fails_at_start_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    env = dict(os.environ, CAREFLOW_TEMPORAL_ADDRESS="nonsense")
    proc = subprocess.run(
        [sys.executable, "-m", "starters", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "CAREFLOW_TEMPORAL_ADDRESS" in lines[0]
    assert "Traceback" not in proc.stderr


def test_production_requires_payload_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from careflow.security.keys import payload_keyring

    monkeypatch.setenv("CAREFLOW_ENVIRONMENT", "production")
    monkeypatch.delenv("CAREFLOW_PAYLOAD_KEYS", raising=False)
    with pytest.raises(ConfigError) as info:
        payload_keyring(load_settings())
    assert info.value.setting == "CAREFLOW_PAYLOAD_KEYS"


def test_fhir_credentials_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from careflow.fhir.auth import SmartBackendServices, StaticToken, token_provider

    assert token_provider(load_settings()) is None
    monkeypatch.setenv("CAREFLOW_FHIR_TOKEN", "static-token")
    assert isinstance(token_provider(load_settings()), StaticToken)

    key = tmp_path / "smart.pem"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    monkeypatch.setenv("CAREFLOW_FHIR_SMART_CLIENT_ID", "careflow")
    monkeypatch.setenv("CAREFLOW_FHIR_SMART_TOKEN_URL", "https://ehr.example.org/token")
    with pytest.raises(ConfigError) as info:  # a half-configured SMART client is refused at start
        load_settings()
    assert info.value.setting == "CAREFLOW_FHIR_SMART_KEY_PATH"
    monkeypatch.setenv("CAREFLOW_FHIR_SMART_KEY_PATH", str(key))
    provider = token_provider(load_settings())
    assert isinstance(provider, SmartBackendServices) and provider.client_id == "careflow"
