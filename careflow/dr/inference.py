"""The inference tier in a DR incident (seed P20): which self-hosted servers are down, and where each of
their gateway tiers answers meanwhile: the tier map's fallback, and for PHI only a fallback permitted PHI
(a PHI request on a tier whose fallback is not waits for the server: the breaker refuses it and the
pipeline's retry rules wait, or take their own fallback).

The move itself is the gateway's circuit breaker held open (careflow/llm/breaker.py): every worker and
API replica reads it from Postgres on its next call, and no clinical request is spent probing a server
that is down.  A production deployment whose inference runs elsewhere (a vLLM fleet behind a load
balancer) keeps the same probe, a GET of the model list.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from careflow.llm.config import SELF_HOSTED, TierRoute
from careflow.llm.providers.openai_compatible import OpenAICompatibleProvider
from careflow.llm.types import Provider, Tier
from careflow.models.dr import InferenceSite, TierMove


def self_hosted(providers: Mapping[str, Provider]) -> dict[str, OpenAICompatibleProvider]:
    """The self-hosted inference servers the gateway routes to."""
    return {
        name: p
        for name, p in providers.items()
        if name == SELF_HOSTED and isinstance(p, OpenAICompatibleProvider)
    }


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or "",
                       parts.path, "", ""))  # fmt: skip


async def probe(providers: Mapping[str, Provider], timeout: float = 3.0) -> list[InferenceSite]:
    return [
        InferenceSite(provider=name, url=_redacted(p.models_url), up=await p.answers(timeout))
        for name, p in self_hosted(providers).items()
    ]


def moves(
    routes: Mapping[Tier, TierRoute], providers: Mapping[str, Provider], down: set[str]
) -> list[TierMove]:
    """Each tier whose primary is down, and its fallback (one that is configured and not down itself)."""
    found: list[TierMove] = []
    for tier, route in sorted(routes.items()):
        if route.primary.provider not in down:
            continue
        fb = route.fallback
        usable = fb is not None and fb.provider in providers and fb.provider not in down
        found.append(
            TierMove(
                tier=tier.value, provider=route.primary.provider,
                fallback=fb.provider if usable and fb else None, model=fb.model if usable and fb else None,
                phi=bool(usable and fb and providers[fb.provider].phi_permitted),
            )
        )  # fmt: skip
    return found
