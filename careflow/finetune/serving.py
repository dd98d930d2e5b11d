"""The note model's versions as something that answers prompts: the base (local, or the folder
`CAREFLOW_FINETUNE_BASE_MODEL` names) with a registry version's LoRA adapter from the PHI store.
Loaded once per process and version; `BASE` is the base alone (no fine-tuned version serves)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from careflow.config import Settings
from careflow.finetune import lm
from careflow.finetune.registry import NoteModelRegistry
from careflow.phi_store import PhiStore

BASE = "base"
MODEL_PREFIX = "careflow-note-model/"  # llm_calls.model: what feedback and the canary's flag rate read
ANSWERS_KEPT = 2048


def served_model(version: str | None) -> str:
    """How the gateway names a version in llm_calls (`careflow-note-model/3`, `careflow-note-model/base`)."""
    return MODEL_PREFIX + (version or BASE)


def base_path(settings: Settings) -> Path:
    return settings.finetune_base_model or settings.state_dir / "models" / "note-base"


def adapter_config(tags: dict[str, str] | None = None) -> lm.TrainConfig:
    """The LoRA shape a version was trained with (its registry tags), to load its adapter."""
    tags = tags or {}
    default = lm.TrainConfig()
    return lm.TrainConfig(
        rank=int(tags.get("lora_rank", default.rank)), alpha=int(tags.get("lora_alpha", default.alpha))
    )


class NoteModels:
    def __init__(self, base: Path, phi: PhiStore, registry: NoteModelRegistry | None) -> None:
        self._base, self._phi, self._registry = base, phi, registry
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._answers: dict[tuple[str, str, int], str] = {}  # oldest first
        self._lock = threading.Lock()  # generation and loading run in worker threads

    @property
    def base(self) -> Path:
        return lm.ensure_base(self._base)

    def _model(self, version: str) -> tuple[Any, Any]:
        if version not in self._loaded:
            if version == BASE:
                self._loaded[version] = lm.load(self.base)
            else:
                if self._registry is None:
                    raise LookupError(f"no registry to find version {version} in")
                v = self._registry.version(version)
                adapter = self._phi.read(v.tag("adapter_ref"))
                self._loaded[version] = lm.with_adapter(self.base, adapter, adapter_config(v.tags))
        return self._loaded[version]

    def with_adapter(self, adapter: bytes, cfg: lm.TrainConfig) -> tuple[Any, Any]:
        """A candidate not registered yet (evaluation), not kept."""
        return lm.with_adapter(self.base, adapter, cfg)

    def generate(self, version: str, prompts: Sequence[str], max_new_tokens: int = 360) -> list[str]:
        """Greedy answers.  A version's weights never change and decoding is greedy, so an answer is
        remembered (the golden set is asked again at every deployment step of the same version)."""
        with self._lock:
            known = {p: self._answers.get((version, p, max_new_tokens)) for p in prompts}
            todo = [p for p, answer in known.items() if answer is None]
            if todo:
                model, tok = self._model(version)
                for p, out in zip(todo, lm.generate(model, tok, todo, max_new_tokens), strict=True):
                    known[p] = self._answers[(version, p, max_new_tokens)] = out
                while len(self._answers) > ANSWERS_KEPT:
                    self._answers.pop(next(iter(self._answers)))
            return [str(known[p]) for p in prompts]
