"""The note model's registry entries (seed P9 stage 4, P17): MLflow's registered model
`careflow-note-model`, one version per fine-tuning run, tagged with the training date, data hash,
`phi_status: restricted`, evaluation scores, the epsilon spent, approvals and the intended use.

Weights are never exported: the LoRA adapter lives encrypted in the PHI store and the version
records its reference.  Aliases say what serves: `champion`, `previous` (one step back, kept for
rollback) and `candidate` (in shadow or canary).  A version whose intended use is diagnostic
(software as a medical device) cannot become champion without an FDA 510(k) clearance attached.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from careflow import registry_store
from careflow.config import Settings
from careflow.registry_store import KEY_TAG

MODEL_NAME = "careflow-note-model"
EXPERIMENT = "careflow-note-model"
EVALUATION_FILE = "evaluation.json"
DIAGNOSTIC_USES = frozenset({"diagnostic", "radiology", "triage"})  # SaMD: clearance required
CLEARANCE = re.compile(r"^K\d{6}$")  # an FDA 510(k) number


class RegistryRefused(RuntimeError):
    """The registry refused: an unknown version, a malformed clearance, a blocked promotion."""


@dataclass(frozen=True)
class NoteVersion(registry_store.Version):
    @property
    def needs_clearance(self) -> bool:
        return self.tag("intended_use") in DIAGNOSTIC_USES

    def blocked(self) -> list[str]:
        """Why this version may not become champion (empty: it may)."""
        out = []
        if self.needs_clearance and not CLEARANCE.match(self.tag("fda_clearance")):
            out.append(f"intended use '{self.tag('intended_use')}' needs an FDA 510(k) clearance attached")
        if self.tag("stage") == "rejected":
            out.append(f"rejected: {self.tag('rejected_because')}")
        return out


class NoteModelRegistry:
    def __init__(self, store_url: str, artifact_root: Path, name: str = MODEL_NAME) -> None:
        self._client = registry_store.client(store_url)
        self.artifact_root = artifact_root
        self.name = name  # the registered model (tests use names of their own)

    def prepare(self) -> str:
        return registry_store.ensure(
            self._client, EXPERIMENT, self.name, self.artifact_root,
            "Clinical note model fine-tuned on de-identified notes (careflow, seed P9)",
        )  # fmt: skip

    def register(
        self, key: str, tags: dict[str, str], metrics: dict[str, float], evaluation: dict[str, Any]
    ) -> NoteVersion:
        """A new version (or the one `key` already made).  `tags` must name the adapter's reference."""
        from mlflow.entities import Metric

        if not tags.get("adapter_ref"):
            raise RegistryRefused("a version needs its adapter's PHI store reference")
        exp_id = self.prepare()
        made = registry_store.version_made_by(self._client, exp_id, self.name, key)
        if made is not None:
            return self.version(made)
        now = datetime.now(UTC)
        tags = {"registered_at": now.isoformat(timespec="seconds"), "phi_status": "restricted",
                "stage": "candidate", **tags}  # fmt: skip
        run = self._client.create_run(exp_id, run_name=key.rsplit("/", 1)[0], tags={KEY_TAG: key})
        stamp = int(now.timestamp() * 1000)
        logged = [Metric(k, float(v), stamp, 0) for k, v in metrics.items()]
        self._client.log_batch(run.info.run_id, metrics=logged)
        self._client.log_dict(run.info.run_id, evaluation, EVALUATION_FILE)
        self._client.set_terminated(run.info.run_id)
        mv = self._client.create_model_version(
            self.name, source=f"{run.info.artifact_uri}/adapter", run_id=run.info.run_id, tags=tags
        )
        return self.version(str(mv.version))

    def version(self, version: str) -> NoteVersion:
        found = registry_store.read_version(self._client, self.name, version, NoteVersion)
        if found is None:
            raise RegistryRefused(f"no version {version} of {self.name}")
        return found

    def versions(self) -> list[NoteVersion]:
        self.prepare()
        found = self._client.search_model_versions(f"name='{self.name}'")
        return sorted((self.version(str(v.version)) for v in found), key=lambda v: int(v.version))

    def by_alias(self, alias: str) -> NoteVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.version(str(self._client.get_model_version_by_alias(self.name, alias).version))
        except MlflowException:
            return None

    def tag(self, version: str, **tags: str) -> NoteVersion:
        self.version(version)
        for k, v in tags.items():
            self._client.set_model_version_tag(self.name, version, k, v)
        return self.version(version)

    def attach_clearance(self, version: str, number: str, by: str) -> NoteVersion:
        if not CLEARANCE.match(number):
            raise RegistryRefused(f"'{number}' is not a 510(k) number (K and six digits, e.g. K213456)")
        return self.tag(version, fda_clearance=number, fda_clearance_by=by,
                        fda_clearance_at=datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip

    def stage(self, version: str, stage: str) -> NoteVersion:
        """The candidate's deployment stage (shadow, canary); it takes the `candidate` alias."""
        self._client.set_registered_model_alias(self.name, "candidate", version)
        return self.stage_tag(version, stage)

    def promote(self, version: str) -> NoteVersion:
        """`version` becomes champion; the champion before it stays one step away as `previous`."""
        info = self.version(version)
        if reasons := info.blocked():
            raise RegistryRefused(f"version {version} cannot be promoted: " + "; ".join(reasons))
        current = self.by_alias("champion")
        if current is not None and current.version != version:
            self._client.set_registered_model_alias(self.name, "previous", current.version)
            self.tag(current.version, stage="previous")
        self._client.set_registered_model_alias(self.name, "champion", version)
        if self.by_alias("candidate") is not None:
            self._client.delete_registered_model_alias(self.name, "candidate")
        return self.stage_tag(version, "champion")

    def reject(self, version: str, because: str) -> NoteVersion:
        """A failed gate or a rollback: the version is marked rejected and serves nowhere."""
        cand = self.by_alias("candidate")
        if cand is not None and cand.version == version:
            self._client.delete_registered_model_alias(self.name, "candidate")
        return self.tag(version, stage="rejected", rejected_because=because,
                        rejected_at=datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip

    def demote(self, version: str, back_to: str | None, because: str) -> NoteVersion:
        """A champion rolled back after its promotion: `back_to` (its `previous`) is champion again, or
        no version is when it was the first; `version` is marked rejected.  Idempotent."""
        champion = self.by_alias("champion")
        if back_to is not None:
            self._client.set_registered_model_alias(self.name, "champion", back_to)
            self.stage_tag(back_to, "champion")
            previous = self.by_alias("previous")
            if previous is not None and previous.version == back_to:
                self._client.delete_registered_model_alias(self.name, "previous")
        elif champion is not None and champion.version == version:
            self._client.delete_registered_model_alias(self.name, "champion")
        return self.reject(version, because)

    def stage_tag(self, version: str, stage: str) -> NoteVersion:
        when = datetime.now(UTC).isoformat(timespec="seconds")
        return self.tag(version, stage=stage, **{f"{stage}_at": when})


def open_note_registry(settings: Settings) -> NoteModelRegistry:
    return NoteModelRegistry(settings.registry_store_url, settings.state_dir / "mlflow")
