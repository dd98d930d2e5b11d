"""careflow's one settings object.

Every knob is an environment variable `CAREFLOW_<FIELD>` (a `.env` file works too).  The Temporal
connection also honours the `temporal` CLI's own variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, ...), so one `.careflow/stack.env` serves both careflow and the CLI.

Defaults point at the embedded stack that `careflow dev up` starts.  `load_settings()` turns a bad
value into a `ConfigError` that names the variable in one line; the CLI prints it and exits 2.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CAREFLOW_"
REGISTRY_DATABASE = "mlflow"  # the model registry's own database, beside careflow's


class ConfigError(Exception):
    """A setting is missing or invalid; `str()` is the one line to show the operator."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"invalid setting {setting}: {problem}")


def _alias(field: str, *extra: str) -> AliasChoices:
    return AliasChoices(ENV_PREFIX + field.upper(), *extra)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    environment: Literal["dev", "production"] = Field(
        "dev",
        description="`dev` may create local secrets under home; `production` requires every secret set.",
    )
    home: Path = Field(
        Path(".careflow"), description="State folder of the embedded stack (data, logs, pids)."
    )

    # Temporal
    temporal_address: str = Field(
        "127.0.0.1:7233", validation_alias=_alias("temporal_address", "TEMPORAL_ADDRESS")
    )
    temporal_namespace: str = Field(
        "careflow", validation_alias=_alias("temporal_namespace", "TEMPORAL_NAMESPACE")
    )
    temporal_api_key: SecretStr | None = Field(
        None, validation_alias=_alias("temporal_api_key", "TEMPORAL_API_KEY")
    )
    temporal_tls_cert: Path | None = Field(
        None, validation_alias=_alias("temporal_tls_cert", "TEMPORAL_TLS_CLIENT_CERT_PATH")
    )
    temporal_tls_key: Path | None = Field(
        None, validation_alias=_alias("temporal_tls_key", "TEMPORAL_TLS_CLIENT_KEY_PATH")
    )
    temporal_tls_ca: Path | None = Field(
        None, validation_alias=_alias("temporal_tls_ca", "TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    )
    temporal_ui_port: int = Field(8233, ge=1, le=65535)
    # The embedded dev server's SQLite pragmas, comma separated ("" = SQLite's own defaults).  WAL
    # doubles workflows/s here and keeps synchronous=FULL, so nothing acknowledged is lost on a crash.
    temporal_sqlite_pragmas: str = "journal_mode=wal"

    # Postgres (+ pgvector)
    database_url: str = "postgresql://postgres@127.0.0.1:55432/careflow"
    database_pool_min: int = Field(1, ge=0)
    database_pool_max: int = Field(10, ge=1)
    # Disaster recovery (seed P20): the embedded stack's hot standby (`careflow dev up --standby`), a
    # streaming replica on this port; synchronous: a commit waits for it (RPO 0), else the lag is the RPO.
    standby_port: int = Field(55433, ge=1, le=65535)
    standby_synchronous: bool = False
    # The health monitor (DRMonitorWorkflow): the primary (with a standby to promote) or a self-hosted
    # inference server failing every probe this long starts a failover; automatic, or behind an
    # operator's approve_failover (paging the next on-call tier on a timer).
    dr_failover_after_s: float = Field(30.0, gt=0)
    dr_probe_every_s: float = Field(5.0, gt=0)
    dr_auto_failover: bool = False
    # Backups: the store (unset: the folder CAREFLOW_HOME/backups; a folder path; or s3://bucket/prefix, any
    # S3-API store, credentials from the AWS environment, endpoint_url for one that is not AWS), and how
    # many complete full backups are kept (older ones and the WAL only they need are deleted).
    backup_store: str = ""
    backup_s3_endpoint_url: str | None = None
    backup_retention: int = Field(7, ge=1)
    # The model registry (MLflow): its store is database `mlflow` beside database_url's unless set
    # (any SQLAlchemy URL); its artifacts (model files, evaluation reports) under CAREFLOW_HOME/mlflow.
    registry_url: str | None = None
    # Speech to text for ambient notes: a CTranslate2 Whisper folder (large-v3 on GPU workers); unset, the
    # default Whisper base is joined from its wheels into CAREFLOW_HOME/models on first use.
    stt_model: str | None = None
    # How the patient's and the specialty's vocabulary reaches the decoder: an initial prompt (measured
    # best with Whisper base), faster-whisper's hotwords (for larger models; base loses speech), or off.
    stt_vocabulary: Literal["prompt", "hotwords", "off"] = "prompt"
    # The note model's base: a causal LM folder (an 8B instruct model on careflow-gpu workers); unset, the
    # small base careflow builds once under CAREFLOW_HOME/models/note-base (minutes on a CPU).
    finetune_base_model: Path | None = None

    # HTTP API (codec endpoint, online paths) and the EHR
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    # Every request: larger bodies get 413; deeper JSON or NUL characters 400 (security/request_limits.py)
    api_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    api_max_json_depth: int = Field(64, ge=8, le=512)
    # An encounter's audio upload is streamed to the PHI store, not buffered: its own, larger limit.
    api_max_audio_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024)
    fhir_base_url: str = ""  # empty: the sandbox EHR inside careflow's API (api_url + /fhir/r4)
    payer_base_url: str = ""  # empty: the sandbox payer inside careflow's API (api_url + /payer/r4)
    # EHR authentication: a static bearer token, or SMART Backend Services (client-credentials JWT)
    fhir_token: SecretStr | None = None
    fhir_smart_client_id: str | None = None
    fhir_smart_token_url: str | None = None
    fhir_smart_key_path: Path | None = None  # PEM private key whose public half the EHR holds
    fhir_smart_key_id: str | None = None
    fhir_smart_scope: str = "system/*.read system/*.write"
    # HL7 v2 MLLP listener (lab results in)
    hl7_host: str = "127.0.0.1"
    hl7_port: int = Field(2575, ge=1, le=65535)
    hl7_max_frame_bytes: int = Field(1024 * 1024, ge=1024)
    # Push notifications (critical alerts, review requests): a webhook, or None to only record them
    notify_webhook_url: str | None = None

    # LLM providers
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=_alias("anthropic_api_key", "ANTHROPIC_API_KEY")
    )
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None

    # Payload encryption: "kid1:<base64 32 bytes>,kid2:<...>"; the active key encrypts, all decrypt.
    payload_keys: SecretStr | None = None
    payload_key_id: str | None = None
    # Bearer token(s) accepted by the codec endpoint, comma separated.
    codec_tokens: SecretStr | None = None
    # Key of the keyed hashes that stand in for raw identifiers outside the PHI store (an MRN the
    # EHR does not know, in the audit trail).  Keep it stable: a new key makes new pseudonyms.
    pseudonym_key: SecretStr | None = None

    # Workers
    worker_max_concurrent_activities: int = Field(64, ge=1)
    worker_max_concurrent_workflow_tasks: int = Field(64, ge=1)
    worker_graceful_shutdown_seconds: float = Field(30.0, ge=0)
    # `dev up` gives worker k the Prometheus port base + k.
    worker_metrics_port_base: int = Field(9460, ge=1, le=65000)

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("expected host:port, e.g. 127.0.0.1:7233")
        return v

    @field_validator("database_url")
    @classmethod
    def _pg_url(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        return v

    @field_validator("fhir_base_url", "openai_base_url", "notify_webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("expected an http(s):// URL")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            missing = "temporal_tls_key" if self.temporal_tls_key is None else "temporal_tls_cert"
            raise ValueError(f"{missing}: mTLS needs both a client certificate and its key")
        smart = {
            "fhir_smart_client_id": self.fhir_smart_client_id,
            "fhir_smart_token_url": self.fhir_smart_token_url,
            "fhir_smart_key_path": self.fhir_smart_key_path,
        }
        if any(smart.values()) and not all(smart.values()):
            missing = next(k for k, v in smart.items() if not v)
            raise ValueError(f"{missing}: SMART Backend Services needs client id, token URL and key path")
        if not self.fhir_base_url:
            self.fhir_base_url = f"{self.api_url}/fhir/r4"
        if not self.payer_base_url:
            self.payer_base_url = f"{self.api_url}/payer/r4"
        if self.database_pool_min > self.database_pool_max:
            raise ValueError("database_pool_min: must not exceed database_pool_max")
        return self

    @property
    def temporal_tls_enabled(self) -> bool:
        # Temporal Cloud: an API key or a client certificate both imply TLS.
        return self.temporal_api_key is not None or self.temporal_tls_cert is not None

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def temporal_ui_url(self) -> str:
        host = self.temporal_address.rpartition(":")[0]
        return f"http://{host}:{self.temporal_ui_port}"

    def workflow_url(self, workflow_id: str = "") -> str:
        """The Web UI page of one workflow, or of the namespace's workflow list."""
        base = f"{self.temporal_ui_url}/namespaces/{self.temporal_namespace}/workflows"
        return f"{base}/{workflow_id}" if workflow_id else base

    @property
    def registry_store_url(self) -> str:
        """SQLAlchemy URL of the model registry's store (psycopg 3 driver): database `mlflow` beside
        careflow's, on the primary of the moment (a failover moves it too: careflow/db/endpoint.py)."""
        if self.registry_url:
            return self.registry_url
        from careflow.db.endpoint import active_url

        parts = urlsplit(active_url(self))
        return urlunsplit(("postgresql+psycopg", parts.netloc, "/" + REGISTRY_DATABASE, "", ""))

    @cached_property
    def state_dir(self) -> Path:
        return self.home.resolve()


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning a validation error into a one-line ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        field = loc[0] if loc else ""
        # A model-level check names its field at the start of the message ("field: problem").
        if not field and ": " in msg:
            field, msg = msg.split(": ", 1)
        name = field.upper() if field.upper().startswith(ENV_PREFIX) else ENV_PREFIX + field.upper()
        raise ConfigError(name, msg) from None
