"""careflow's typed search attributes.  Values are ids and enums only: never PHI (they are not encrypted)."""

from collections.abc import Sequence
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

PIPELINE = SearchAttributeKey.for_keyword("CareflowPipeline")
STAGE = SearchAttributeKey.for_keyword("CareflowStage")
TENANT = SearchAttributeKey.for_keyword("CareflowTenant")
PRIORITY = SearchAttributeKey.for_keyword("CareflowPriority")
SPECIALTY = SearchAttributeKey.for_keyword("CareflowSpecialty")  # ambient notes: primary-care, ...
PAYER = SearchAttributeKey.for_keyword("CareflowPayer")  # the payer organisation's name, never the member


def cli_flags(keys: Sequence[SearchAttributeKey[Any]]) -> list[str]:
    """`temporal server start-dev --search-attribute K=Type ...` for each key."""
    flags: list[str] = []
    for key in keys:
        # INDEXED_VALUE_TYPE_KEYWORD_LIST -> KeywordList, the CLI's spelling
        kind = IndexedValueType.Name(IndexedValueType.ValueType(key.indexed_value_type))
        kind = kind.removeprefix("INDEXED_VALUE_TYPE_")
        flags += ["--search-attribute", f"{key.name}={kind.title().replace('_', '')}"]
    return flags


def at_start(pipeline: str, stage: str, tenant_id: str, priority: str | None = None) -> TypedSearchAttributes:
    """A pipeline run's attributes in its start request: listed from its first moment (the
    workflow keeps STAGE, and PRIORITY once known, current)."""
    pairs = [
        SearchAttributePair(PIPELINE, pipeline),
        SearchAttributePair(STAGE, stage),
        SearchAttributePair(TENANT, tenant_id),
    ]
    if priority is not None:
        pairs.append(SearchAttributePair(PRIORITY, priority))
    return TypedSearchAttributes(pairs)


def updates(
    stage: str,
    *,
    pipeline: str | None = None,
    tenant_id: str | None = None,
    priority: str | None = None,
    payer: str | None = None,
) -> list[SearchAttributeUpdate[str]]:
    """What a workflow upserts when its stage moves (`workflow.upsert_search_attributes`): the stage,
    and each other attribute that is given."""
    pairs: list[SearchAttributeUpdate[str]] = []
    if pipeline is not None:
        pairs.append(PIPELINE.value_set(pipeline))
    pairs.append(STAGE.value_set(stage))
    for key, value in ((TENANT, tenant_id), (PRIORITY, priority), (PAYER, payer)):
        if value is not None:
            pairs.append(key.value_set(value))
    return pairs
