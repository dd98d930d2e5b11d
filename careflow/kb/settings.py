"""Knowledge-base query settings (CAREFLOW_KB_*): retrieval depth, semantic-cache threshold and TTLs,
the LLM deadline of an answer.

`CAREFLOW_KB_CACHE_TTL_HOURS` takes JSON, e.g. `{"formulary": 12, "guideline": 72}`; doc types it does
not name keep their default, and an unknown doc type gets the shortest TTL configured.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TTL_HOURS: dict[str, float] = {
    "formulary": 24.0,  # formulary and payer rules change often: a day
    "payer_policy": 24.0,
    "protocol": 168.0,  # hospital protocols and guidelines: a week
    "guideline": 168.0,
}


class KbSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREFLOW_KB_", env_file=".env", extra="ignore")

    cache_threshold: float = Field(0.95, ge=0.5, le=1.0, description="Cosine similarity for a cache hit.")
    cache_enabled: bool = True
    cache_ttl_hours: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TTL_HOURS))
    top_k: int = Field(5, ge=1, le=50)
    # Hybrid ranking: the ANN's nearest `rerank_candidates`, re-ordered by cosine similarity plus
    # `lexical_weight` x the share of the question's content words the chunk contains.
    rerank_candidates: int = Field(20, ge=1, le=200)
    lexical_weight: float = Field(0.2, ge=0.0, le=1.0)
    llm_timeout_seconds: float = Field(20.0, gt=0)
    team_id: str = "careflow-pipelines"
    use_case: str = "clinical-qa"

    @field_validator("cache_ttl_hours")
    @classmethod
    def _merge_defaults(cls, value: dict[str, float]) -> dict[str, float]:
        if any(hours <= 0 for hours in value.values()):
            raise ValueError("every TTL must be positive")
        return {**DEFAULT_TTL_HOURS, **value}

    def ttl_for(self, doc_types: list[str] | tuple[str, ...]) -> timedelta:
        """The TTL of an answer: that of its shortest-lived cited doc type."""
        shortest = min(self.cache_ttl_hours.values())
        hours = [self.cache_ttl_hours.get(t, shortest) for t in doc_types] or [shortest]
        return timedelta(hours=min(hours))
