"""careflow's typed search attributes.  Values are ids and enums only: never PHI (they are not encrypted)."""

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.common import SearchAttributeKey

PIPELINE = SearchAttributeKey.for_keyword("CareflowPipeline")
STAGE = SearchAttributeKey.for_keyword("CareflowStage")
TENANT = SearchAttributeKey.for_keyword("CareflowTenant")
PRIORITY = SearchAttributeKey.for_keyword("CareflowPriority")
PAYER = SearchAttributeKey.for_keyword("CareflowPayer")  # the payer organisation's name, never the member

ALL = (PIPELINE, STAGE, TENANT, PRIORITY, PAYER)


def cli_flags() -> list[str]:
    """`temporal server start-dev --search-attribute K=Type ...` for every key."""
    flags: list[str] = []
    for key in ALL:
        # INDEXED_VALUE_TYPE_KEYWORD_LIST -> KeywordList, the CLI's spelling
        kind = IndexedValueType.Name(IndexedValueType.ValueType(key.indexed_value_type))
        kind = kind.removeprefix("INDEXED_VALUE_TYPE_")
        flags += ["--search-attribute", f"{key.name}={kind.title().replace('_', '')}"]
    return flags
