"""The note model's registry entries for real (MLflow on the session's Postgres): provenance tags,
idempotent registration, champion with the previous version one step away, rejection, and the SaMD
gate that keeps a diagnostic model from champion until an FDA 510(k) clearance is attached."""

from __future__ import annotations

import uuid

import pytest

from careflow.config import Settings
from careflow.finetune.registry import NoteModelRegistry, RegistryRefused


@pytest.fixture
def registry(database_url: str) -> NoteModelRegistry:
    s = Settings()
    return NoteModelRegistry(
        s.registry_store_url, s.state_dir / "mlflow", name=f"test-note-{uuid.uuid4().hex[:8]}"
    )


def register(r: NoteModelRegistry, n: int, **tags: str) -> str:
    base = {
        "adapter_ref": f"adapter/{n:064x}",
        "data_hash": "ab" * 32,
        "epsilon": "7.99",
        "feature": "note-draft",
    }
    return r.register(
        f"model-promotion-test-{uuid.uuid4().hex}/register", base | tags, {"rouge_l": 0.4}, {}
    ).version


def test_a_version_carries_its_provenance_and_is_registered_once_per_key(registry: NoteModelRegistry) -> None:
    key = f"model-promotion-note-draft-{uuid.uuid4().hex[:6]}/register"
    tags = {"adapter_ref": "adapter/" + "0" * 64, "data_hash": "cd" * 32, "epsilon": "7.99"}
    first = registry.register(key, tags, {"rouge_l": 0.41}, {"subgroups": []})
    again = registry.register(key, tags, {"rouge_l": 0.41}, {"subgroups": []})
    assert first.version == again.version and len(registry.versions()) == 1
    assert first.tag("phi_status") == "restricted" and first.tag("stage") == "candidate"
    assert first.tag("data_hash") == "cd" * 32 and first.tag("registered_at")
    with pytest.raises(RegistryRefused, match="adapter"):
        registry.register(key + "x", {"data_hash": "x"}, {}, {})


def test_promotion_keeps_the_previous_champion_one_step_away(registry: NoteModelRegistry) -> None:
    v1, v2 = register(registry, 1), register(registry, 2)
    registry.promote(v1)
    registry.stage(v2, "canary")
    assert registry.by_alias("candidate").version == v2  # type: ignore[union-attr]
    promoted = registry.promote(v2)
    assert "champion" in promoted.aliases and promoted.tag("stage") == "champion"
    assert registry.by_alias("previous").version == v1  # type: ignore[union-attr]
    assert registry.by_alias("candidate") is None
    assert registry.version(v1).tag("stage") == "previous"


def test_a_rejected_version_serves_nowhere_and_cannot_be_promoted(registry: NoteModelRegistry) -> None:
    v = register(registry, 3)
    registry.stage(v, "shadow")
    rejected = registry.reject(v, "golden-query score fell 14 % in canary")
    assert rejected.tag("stage") == "rejected" and registry.by_alias("candidate") is None
    with pytest.raises(RegistryRefused, match="golden-query"):
        registry.promote(v)


def test_a_diagnostic_model_needs_an_fda_clearance_before_champion(registry: NoteModelRegistry) -> None:
    v = register(registry, 4, intended_use="radiology")
    assert registry.version(v).needs_clearance
    with pytest.raises(RegistryRefused, match="510\\(k\\)"):
        registry.promote(v)
    with pytest.raises(RegistryRefused, match="not a 510"):
        registry.attach_clearance(v, "12345", "regulatory-affairs")
    cleared = registry.attach_clearance(v, "K213456", "regulatory-affairs")
    assert cleared.blocked() == [] and cleared.tag("fda_clearance_by") == "regulatory-affairs"
    assert "champion" in registry.promote(v).aliases
    documentation = register(registry, 5, intended_use="documentation")
    assert registry.version(documentation).blocked() == []
