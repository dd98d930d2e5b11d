"""What a pipeline declares about itself (workers/pipelines.py lists them), and what every activity
factory is given: the worker process's shared clients, each built once, on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from temporalio.common import SearchAttributeKey
from temporalio.converter import PayloadCodec

from careflow import task_queues
from careflow.config import Settings

if TYPE_CHECKING:
    import typer
    from fastapi import APIRouter
    from temporalio.client import Client, Schedule

    from activities.llm import LlmActivities
    from careflow.audit.trail import PostgresAuditTrail
    from careflow.fhir.client import FhirClient
    from careflow.finetune.registry import NoteModelRegistry
    from careflow.hl7.listener import Route
    from careflow.notify.notifier import Notifier
    from careflow.phi_store import PhiStore
    from careflow.readmission.registry import ModelRegistry


T = TypeVar("T")


@dataclass(frozen=True)
class ProcessClients:
    """Built once per worker process and handed to every pipeline's activity factory."""

    settings: Settings
    pool: asyncpg.Pool
    codec: PayloadCodec | None
    identity: str

    @cached_property
    def fhir(self) -> FhirClient:
        from activities.fhir import process_fhir_client

        return process_fhir_client(self.settings, self.pool, self.identity)

    @cached_property
    def notifier(self) -> Notifier:
        from careflow.notify.notifier import Notifier

        return Notifier(self.pool, self.settings.notify_webhook_url)

    @cached_property
    def audit_trail(self) -> PostgresAuditTrail:
        from careflow.audit.trail import PostgresAuditTrail

        return PostgresAuditTrail(self.pool)

    @cached_property
    def llm(self) -> LlmActivities:
        from activities.llm import LlmActivities

        return LlmActivities(self.pool, self.settings, actor=self.identity)

    @cached_property
    def phi_store(self) -> PhiStore:
        """Encrypted files at rest (audio, transcripts): only their references travel in payloads."""
        from careflow.phi_store import PhiStore

        return PhiStore.of(self.settings)

    @property
    def registry(self) -> ModelRegistry:
        """The model registry (MLflow; its import takes seconds, so only on first use)."""
        from careflow.readmission.registry import open_registry

        return self._registries.on(
            self.settings.registry_store_url, "model", lambda: open_registry(self.settings)
        )

    @property
    def note_registry(self) -> NoteModelRegistry:
        """The note model's registry (MLflow, beside readmission's)."""
        from careflow.finetune.registry import open_note_registry

        return self._registries.on(
            self.settings.registry_store_url, "note", lambda: open_note_registry(self.settings)
        )

    @cached_property
    def _registries(self) -> _Registries:
        return _Registries()


class _Registries:
    """Each registry opened once per store URL: after a failover moves the database, the next use opens
    it again on the new primary (a worker never needs a restart for it)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # activities call from several threads (MLflow is synchronous)

    def on(self, url: str, kind: str, make: Callable[[], T]) -> T:
        with self._lock:
            if (url, kind) not in self._open:
                self._open = {k: v for k, v in self._open.items() if k[1] != kind}
                self._open[(url, kind)] = make()
            found: T = self._open[(url, kind)]
            return found


ActivityFactory = Callable[[ProcessClients], Sequence[Callable[..., Any]]]
# An HL7 v2 message type's route, built once the listener has its Temporal client.
RouteFactory = Callable[["Client"], "Route[Any]"]


@dataclass(frozen=True)
class ActivityQueue:
    """Activities on a queue of their own, so they scale apart (speech to text: careflow-stt)."""

    activities: ActivityFactory
    # The most of them one worker process runs at once; None: CAREFLOW_WORKER_MAX_CONCURRENT_ACTIVITIES.
    # Work that uses every core (speech decoding) takes 1: more would thrash, and the rest wait queued
    # in Temporal for the next free worker, where another process or machine can take them.
    slots: int | None = None


@dataclass(frozen=True)
class Pipeline:
    """One pipeline, declared once: what the workers run, the CLI and API offer, `dev up` prepares."""

    name: str  # the CareflowPipeline search attribute's value and `careflow demo <name>`
    summary: str
    workflows: Sequence[type]
    activities: ActivityFactory
    task_queue: str = task_queues.MAIN
    search_attributes: Sequence[SearchAttributeKey[Any]] = ()
    commands: Sequence[typer.Typer] = ()  # command groups, each named (`typer.Typer(name=...)`)
    routers: Sequence[APIRouter] = ()
    demo: Callable[..., None] | None = None  # a typer command: `careflow demo <name>`
    hl7: Mapping[str, RouteFactory] = field(default_factory=dict)  # "ORU^R01" -> its route, over MLLP
    queues: Mapping[str, ActivityQueue] = field(default_factory=dict)  # queue name -> its activities
    # The Temporal Schedules it runs on, by id (`dev up` creates or updates each; production: the same
    # call from a deployment job).
    schedules: Callable[[], Mapping[str, Schedule]] = dict
