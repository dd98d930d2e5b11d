"""The fine-tuned note model as a gateway provider: self-hosted (so PHI is permitted), answering the
`note_draft` task with the registry version the model string names (`careflow-note-model/<version>`,
or `careflow-note-model/base` for the base alone).  Which version a request gets is the deployment
row's decision (careflow/finetune/deployment.py), made by the gateway before it calls here.

Decoding is synchronous and CPU- or GPU-bound: it runs in a thread; the model loads on first use."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from functools import cached_property

from pydantic import ValidationError

from careflow.config import Settings
from careflow.finetune.prep import soap_prompt
from careflow.finetune.registry import RegistryRefused
from careflow.finetune.serving import MODEL_PREFIX, NoteModels
from careflow.llm.tasks import NoteDraftInput
from careflow.llm.types import CompletionRequest, CompletionResponse, ProviderError, Usage

NAME = "note_model"


class NoteModelProvider:
    name = NAME
    phi_permitted = True  # in-process: nothing leaves careflow

    def __init__(self, models: Callable[[], NoteModels]) -> None:
        self._make = models

    @cached_property
    def _models(self) -> NoteModels:
        return self._make()

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        if request.task != "note_draft" or not model.startswith(MODEL_PREFIX):
            raise ProviderError(self.name, "bad_request", "the note model answers note_draft requests only")
        try:
            inp = NoteDraftInput.model_validate(request.task_input)
        except ValidationError:
            raise ProviderError(self.name, "bad_request", "note_draft input invalid") from None
        prompt = soap_prompt(inp.age, inp.sex, inp.conditions, inp.medications, inp.visit)
        version = model.removeprefix(MODEL_PREFIX)
        try:
            [note] = await asyncio.to_thread(self._models.generate, version, [prompt])
        except (LookupError, RegistryRefused) as exc:  # no such version in the registry
            raise ProviderError(self.name, "bad_request", str(exc)) from None
        text = json.dumps({"note": note.strip(), "missing_information": []})
        return CompletionResponse(
            text=text, provider=self.name, model=model, finish_reason="end_turn",
            usage=Usage(input_tokens=math.ceil(len(prompt) / 4), output_tokens=math.ceil(len(note) / 4)),
            metadata={"engine": "careflow note model (LoRA on the local base)", "version": version},
        )  # fmt: skip


def note_model(settings: Settings) -> NoteModelProvider:
    """The process's note model provider: the base, the PHI store and the registry of these settings;
    nothing loads until its first request."""
    from careflow.finetune.registry import open_note_registry
    from careflow.finetune.serving import base_path
    from careflow.phi_store import PhiStore

    return NoteModelProvider(
        lambda: NoteModels(base_path(settings), PhiStore.of(settings), open_note_registry(settings))
    )
