"""The model registry: MLflow's, its store in careflow's Postgres (database `mlflow`), its artifacts
under CAREFLOW_HOME/mlflow.

Each training run is an MLflow run (parameters, metrics, the model in LightGBM's text format, the
evaluation report with its subgroup table and calibration curve, the baseline scores) and one version
of the registered model `careflow-readmission-30d`, tagged with the training date, data hash, model
hash, metrics, flagged subgroups and approvals.  The aliases `champion` and `challenger` say which
versions score.  Every score records the version that produced it.

Registering is idempotent on the caller's key (the training workflow id + step): a retried activity
finds its own run and version instead of adding another.  MLflow is synchronous; callers in an event
loop run these methods in a thread.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from careflow import registry_store
from careflow.config import Settings
from careflow.models.readmission import ModelAlias
from careflow.readmission.scoring import Cuts
from careflow.registry_store import KEY_TAG

if TYPE_CHECKING:  # LightGBM and scikit-learn take seconds to import: only where a model runs
    from careflow.readmission.model import TrainedModel
    from careflow.readmission.training import TrainingRun

MODEL_NAME = "careflow-readmission-30d"
EXPERIMENT = "careflow-readmission"
MODEL_FILE = "model/model.txt"
EVALUATION_FILE = "evaluation.json"
BASELINE_FILE = "baseline.json"


class RegistryError(RuntimeError):
    """The registry refused an operation (an unknown version, a blocked promotion)."""


class PromotionBlocked(RegistryError):
    pass


@dataclass(frozen=True)
class VersionInfo(registry_store.Version):
    @property
    def flagged(self) -> list[str]:
        return [f for f in self.tag("flagged_subgroups").split(",") if f]

    @property
    def approved_by(self) -> str:
        return self.tag("subgroups_approved_by")

    @property
    def cuts(self) -> Cuts:
        return Cuts(high=float(self.tag("cut_high")), moderate=float(self.tag("cut_moderate")))


@dataclass(frozen=True)
class LoadedModel:
    version: str
    trained: TrainedModel
    cuts: Cuts
    baseline: NDArray[np.float64]


class ModelRegistry:
    def __init__(self, store_url: str, artifact_root: Path) -> None:
        self.store_url = store_url
        self.artifact_root = artifact_root
        self._client = registry_store.client(store_url)
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    # -- setup ------------------------------------------------------------------------------------
    def prepare(self) -> str:
        """Create the store's tables (first use), the experiment and the registered model; idempotent.
        Returns the experiment id."""
        return registry_store.ensure(
            self._client, EXPERIMENT, MODEL_NAME, self.artifact_root,
            "30-day readmission risk (careflow, seed P11/P12)",
        )  # fmt: skip

    # -- versions ---------------------------------------------------------------------------------
    def register(self, run: TrainingRun, key: str, trained_by: str) -> VersionInfo:
        """Log `run` and register it as a new version (or return the version `key` already made)."""
        from mlflow.entities import Metric, Param

        exp_id = self.prepare()
        made = registry_store.version_made_by(self._client, exp_id, MODEL_NAME, key)
        if made is not None:
            return self.version(made)
        report = run.report
        flagged = [f"{r.attribute}={r.value}" for r in report.flagged]
        tags = {
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "trained_by": trained_by,
            "data_hash": run.data_hash,
            "model_sha256": run.trained.sha256,
            "discharges": str(run.n),
            "seed": str(run.seed),
            "auroc": f"{run.auroc:.4f}",
            "brier": f"{report.overall.brier:.4f}",
            "sensitivity": f"{report.overall.sensitivity or 0.0:.4f}",
            "lace_auroc": f"{run.lace_auroc:.4f}",
            "best_auroc": f"{run.best_auroc:.4f}",
            "cut_high": repr(run.cuts.high),
            "cut_moderate": repr(run.cuts.moderate),
            "flagged_subgroups": ",".join(flagged),
            "subgroups_approved_by": "",
        }
        mlrun = self._client.create_run(exp_id, run_name=key.rsplit("/", 1)[0], tags={KEY_TAG: key})
        run_id = mlrun.info.run_id
        stamp = int(datetime.now(UTC).timestamp() * 1000)
        params = [
            Param("discharges", str(run.n)),
            Param("seed", str(run.seed)),
            Param("rounds", str(run.rounds)),
        ]
        self._client.log_batch(run_id, params=params)
        metrics = {
            "auroc": run.auroc,
            "brier": report.overall.brier,
            "sensitivity": report.overall.sensitivity or 0.0,
            "lace_auroc": run.lace_auroc,
            "best_auroc": run.best_auroc,
            "training_seconds": run.seconds,
        }
        for row in report.subgroups:
            if row.metrics.auroc is not None:
                value = re.sub(r"[^\w\-. ]", "_", row.value.replace("+", "plus"))
                metrics[f"auroc.{row.attribute}.{value}"] = row.metrics.auroc
        self._client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()])
        self._client.log_text(run_id, run.trained.to_text(), MODEL_FILE)
        self._client.log_dict(run_id, evaluation_document(run), EVALUATION_FILE)
        self._client.log_dict(run_id, {"scores": run.baseline.round(5).tolist()}, BASELINE_FILE)
        self._client.set_terminated(run_id)
        mv = self._client.create_model_version(
            MODEL_NAME, source=f"{mlrun.info.artifact_uri}/model", run_id=run_id, tags=tags
        )
        return self.version(str(mv.version))

    def version(self, version: str) -> VersionInfo:
        found = registry_store.read_version(self._client, MODEL_NAME, version, VersionInfo)
        if found is None:
            raise RegistryError(f"no version {version} of {MODEL_NAME}")
        return found

    def versions(self) -> list[VersionInfo]:
        found = self._client.search_model_versions(f"name='{MODEL_NAME}'")
        return sorted((self.version(str(v.version)) for v in found), key=lambda v: int(v.version))

    def by_alias(self, alias: ModelAlias) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(MODEL_NAME, alias.value)
        except MlflowException:
            return None
        return self.version(str(mv.version))

    def approve(self, version: str, reviewer: str, note: str) -> VersionInfo:
        """A reviewer accepts the flagged subgroups of `version` (kept as version tags)."""
        self.version(version)
        when = datetime.now(UTC).isoformat(timespec="seconds")
        self._client.set_model_version_tag(MODEL_NAME, version, "subgroups_approved_by", reviewer)
        self._client.set_model_version_tag(MODEL_NAME, version, "subgroups_approved_at", when)
        self._client.set_model_version_tag(MODEL_NAME, version, "subgroups_approval_note", note)
        return self.version(version)

    def promote(self, version: str, alias: ModelAlias) -> VersionInfo:
        """Point `alias` at `version`.  Champion needs flagged subgroups approved first."""
        info = self.version(version)
        if alias is ModelAlias.CHAMPION and info.flagged and not info.approved_by:
            raise PromotionBlocked(
                f"version {version} has flagged subgroups ({', '.join(info.flagged)}) and no approval"
            )
        self._client.set_registered_model_alias(MODEL_NAME, alias.value, version)
        self._client.set_model_version_tag(
            MODEL_NAME, version, f"promoted_{alias.value}_at", datetime.now(UTC).isoformat(timespec="seconds")
        )
        return self.version(version)

    # -- models -----------------------------------------------------------------------------------
    def load(self, version: str) -> LoadedModel:
        """The version's model, cut points and baseline (downloaded once per process)."""
        from careflow.readmission.model import TrainedModel

        with self._lock:
            if version in self._loaded:
                return self._loaded[version]
        info = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            model_path = self._client.download_artifacts(info.run_id, MODEL_FILE, tmp)
            trained = TrainedModel.from_text(Path(model_path).read_text())
            baseline_path = self._client.download_artifacts(info.run_id, BASELINE_FILE, tmp)
            baseline = np.asarray(json.loads(Path(baseline_path).read_text())["scores"], dtype=np.float64)
        if trained.sha256 != info.tag("model_sha256"):
            raise RegistryError(f"version {version}: the model file's SHA-256 is not the one registered")
        loaded = LoadedModel(version, trained, info.cuts, baseline)
        with self._lock:
            self._loaded[version] = loaded
        return loaded

    def evaluation(self, version: str) -> dict[str, Any]:
        info = self.version(version)
        with tempfile.TemporaryDirectory() as tmp:
            path = self._client.download_artifacts(info.run_id, EVALUATION_FILE, tmp)
            data: dict[str, Any] = json.loads(Path(path).read_text())
        return data


def evaluation_document(run: TrainingRun) -> dict[str, Any]:
    """The evaluation report stored with the version: overall, calibration curve, subgroup table."""
    report = run.report
    return {
        "threshold": report.threshold,
        "overall": asdict(report.overall),
        "lace_auroc": run.lace_auroc,
        "best_auroc": run.best_auroc,
        "calibration": [{"predicted": p, "observed": o, "n": n} for p, o, n in report.calibration],
        "subgroups": [
            {
                "attribute": r.attribute,
                "value": r.value,
                **asdict(r.metrics),
                "judged": r.judged,
                "flagged": r.flagged,
            }
            for r in report.subgroups
        ],
    }


def open_registry(settings: Settings) -> ModelRegistry:
    """careflow's registry: the store `settings.registry_store_url`, artifacts under CAREFLOW_HOME/mlflow."""
    return ModelRegistry(settings.registry_store_url, settings.state_dir / "mlflow")
