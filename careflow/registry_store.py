"""MLflow as careflow's model registry: its store in careflow's Postgres (database `mlflow`), its
artifacts under CAREFLOW_HOME/mlflow, nothing sent anywhere.  What every registered model shares:
the quiet client, the experiment and registered model made on first use, and registration that is
idempotent on the caller's key (a retried activity finds the version it made).

MLflow is synchronous; callers in an event loop run these in a thread.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from mlflow import MlflowClient

KEY_TAG = "careflow.idempotency_key"


@dataclass(frozen=True)
class Version:
    """One registered version as careflow reads it (each registry adds what its tags mean)."""

    version: str
    aliases: list[str]
    tags: dict[str, str]
    run_id: str
    created: datetime

    def tag(self, key: str, default: str = "") -> str:
        return self.tags.get(key, default)


V = TypeVar("V", bound=Version)


def quiet() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(store_url: str) -> MlflowClient:
    quiet()
    from mlflow import MlflowClient

    quiet()  # mlflow's import sets its own loggers to INFO
    return MlflowClient(tracking_uri=store_url, registry_uri=store_url)


def ensure(c: MlflowClient, experiment: str, model: str, artifact_root: Path, description: str) -> str:
    """The experiment (its id returned) and the registered model, created on first use; idempotent and
    safe when another process creates them at the same moment."""
    from mlflow.exceptions import MlflowException

    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        try:
            exp_id = c.create_experiment(experiment, artifact_location=artifact_root.as_uri())
        except MlflowException:  # created meanwhile by another process
            made = c.get_experiment_by_name(experiment)
            if made is None:
                raise
            exp_id = made.experiment_id
    else:
        exp_id = exp.experiment_id
    try:
        c.get_registered_model(model)
    except MlflowException:
        try:
            c.create_registered_model(model, description=description)
        except MlflowException:
            pass  # created meanwhile
    return str(exp_id)


def version_made_by(c: MlflowClient, exp_id: str, model: str, key: str) -> str | None:
    """The version a run tagged with `key` registered, if an earlier attempt got that far."""
    for r in c.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'"):
        versions = c.search_model_versions(f"name='{model}' and run_id='{r.info.run_id}'")
        if versions:
            return str(versions[0].version)
    return None


def read_version(c: MlflowClient, model: str, version: str, kind: type[V]) -> V | None:
    """`version` of `model` (None when there is no such version)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = c.get_model_version(model, version)
    except MlflowException:
        return None
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
    return kind(str(mv.version), sorted(mv.aliases or []), dict(mv.tags or {}), mv.run_id or "", created)
