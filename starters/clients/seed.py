"""Load the synthetic EHR into a FHIR server as transaction Bundles (`careflow seed ehr`, the demos,
the benches and the tests).

Generation is a pure function of (seed, patients, as_of); loading POSTs each Bundle to the FHIR base
URL through careflow's FhirClient, which records one PHI-write audit event per Bundle (ids only).
Every entry is a conditional create, so loading the same seed twice creates nothing twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from careflow.audit.trail import PostgresAuditTrail
from careflow.config import Settings
from careflow.fhir.client import FhirClient, FhirError
from careflow.fhir.synthetic import iter_patients, staff_bundle
from careflow.security.logging import get_logger

log = get_logger(__name__)

SEED_ACTOR = "careflow-seed"


class LoadError(Exception):
    """A Bundle was refused; the message carries the HTTP status and bundle index only (no PHI)."""


@dataclass
class LoadStats:
    bundles: int = 0
    entries: int = 0
    created: int = 0  # 201s; a re-run of the same seed finds everything (200) and creates 0


Transact = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class BundleLoader:
    """Runs transaction Bundles (through FhirClient.transaction, which audits each one) with bounded
    concurrency and counts what the server created."""

    def __init__(self, transact: Transact, *, concurrency: int = 4) -> None:
        self._transact = transact
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self.stats = LoadStats()

    async def post(self, index: int, bundle: dict[str, Any]) -> dict[str, Any]:
        async with self._slots:
            try:
                response = await self._transact(bundle)
            except FhirError as exc:
                # FhirClient errors carry status and issue codes and locations, never content.
                raise LoadError(f"bundle {index}: {exc}") from None
        statuses = [str(e.get("response", {}).get("status", "")) for e in response.get("entry", [])]
        self.stats.bundles += 1
        self.stats.entries += len(bundle["entry"])
        self.stats.created += sum(s.startswith("201") for s in statuses)
        log.debug("seed.bundle_loaded", bundle_index=index, entries=len(bundle["entry"]))
        return response

    async def load(
        self,
        bundles: Iterable[dict[str, Any]],
        *,
        first_index: int = 0,
        on_done: Callable[[], None] | None = None,
    ) -> LoadStats:
        """Post every Bundle, at most `concurrency` at a time, generating ahead only a little."""
        pending: set[asyncio.Task[dict[str, Any]]] = set()

        async def settle(until: int) -> None:
            nonlocal pending
            while len(pending) > until:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a refused Bundle stops the run
                    if on_done:
                        on_done()

        try:
            for index, bundle in enumerate(bundles, start=first_index):
                await settle(2 * self._concurrency - 1)
                pending.add(asyncio.create_task(self.post(index, bundle)))
            await settle(0)
        finally:
            for task in pending:
                task.cancel()
        return self.stats


async def load_synthetic_ehr(
    settings: Settings,
    pool: asyncpg.Pool,
    seed: int,
    patients: int,
    as_of: date,
    concurrency: int = 4,
    on_bundle: Callable[[], None] | None = None,
) -> LoadStats:
    """The staff Bundle, then one Bundle per patient; `on_bundle` is called after each one."""
    # Large transactions: a generous timeout; every entry is a conditional create, so the client
    # may retry a transaction safely.
    async with FhirClient(
        settings.fhir_base_url, audit=PostgresAuditTrail(pool), actor=SEED_ACTOR, timeout=120.0
    ) as fhir:
        loader = BundleLoader(fhir.transaction, concurrency=concurrency)
        # The staff Bundle goes first and alone: patient Bundles reference its resources.
        await loader.post(0, staff_bundle(seed))
        if on_bundle:
            on_bundle()
        patient_bundles = (bundle for _, bundle in iter_patients(seed, patients, as_of))
        return await loader.load(patient_bundles, first_index=1, on_done=on_bundle)
