"""Models of the knowledge-base refresh workflow (ingestion of a source folder for one tenant)."""

from __future__ import annotations

from pydantic import BaseModel, Field

PIPELINE = "kb-refresh"
WORKFLOW_ID_PREFIX = "kb-refresh-"  # + tenant and folder hash (a run), + tenant (the nightly Schedule)


class KbRefreshInput(BaseModel):
    tenant_id: str = "default"
    source: str  # folder readable by the workers
    batch_size: int = Field(16, ge=1, le=500)  # documents per ingest activity


class KbPlanInput(BaseModel):
    tenant_id: str
    source: str


class KbPlan(BaseModel):
    documents_total: int
    changed: list[str] = Field(default_factory=list)  # files to ingest (new or modified)
    unchanged: int = 0  # files whose hash is already stored
    chunks_unchanged: int = 0


class KbBatchInput(BaseModel):
    tenant_id: str
    source: str
    files: list[str]


class KbRejection(BaseModel):
    file: str
    document_id: str | None = None
    chunk_id: str | None = None  # None when the whole document was rejected
    reason: str


class KbDocumentOutcome(BaseModel):
    file: str
    document_id: str | None = None
    status: str  # inserted | replaced | unchanged | rejected
    chunks_written: int = 0
    chunks_unchanged: int = 0
    embeddings_reused: int = 0
    cache_invalidated: int = 0


class KbBatchResult(BaseModel):
    documents: list[KbDocumentOutcome] = Field(default_factory=list)
    rejected: list[KbRejection] = Field(default_factory=list)


class KbRetireInput(BaseModel):
    tenant_id: str
    source: str
    ingested_document_ids: list[str] = Field(default_factory=list)  # written or refused this run: kept


class KbRetireResult(BaseModel):
    retired: list[str] = Field(default_factory=list)  # document ids
    cache_invalidated: int = 0


class KbPublishInput(BaseModel):
    tenant_id: str
    document_ids: list[str]


class KbPublishResult(BaseModel):
    invalidated: int  # semantic-cache entries retired


class KbProgress(BaseModel):
    """The `progress` query, and the workflow's result once stage is `done`."""

    stage: str = "planning"  # planning | ingesting | retiring | publishing | done
    documents_total: int = 0
    documents_done: int = 0
    chunks_written: int = 0
    chunks_unchanged: int = 0
    documents_inserted: int = 0
    documents_replaced: int = 0
    documents_retired: list[str] = Field(default_factory=list)  # their source left the folder
    rejected: list[KbRejection] = Field(default_factory=list)
    cache_entries_invalidated: int = 0  # retired with the swaps, plus by the document.updated event
