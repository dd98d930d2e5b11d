-- Documents removed from their source folder are retired by the next refresh (careflow.kb.store
-- retire_missing): their chunks leave the search in the same transaction as the semantic-cache
-- entries citing them, and this table keeps what was retired, when and why, for the audit of past
-- drafts that cited it.  A document remembers the folder it came from; rows ingested before this
-- migration have none until a refresh of their folder adopts them.
ALTER TABLE kb_documents ADD COLUMN source_root text;

CREATE TABLE kb_retired_documents (
    tenant_id       text NOT NULL,
    document_id     text NOT NULL,
    version         text NOT NULL,
    title           text NOT NULL,
    doc_type        text NOT NULL,
    source_root     text NOT NULL,
    source_file     text NOT NULL,
    content_hash    text NOT NULL,
    chunk_count     integer NOT NULL,
    reason          text NOT NULL,
    retired_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, document_id, content_hash, retired_at)
);

ALTER TABLE kb_retired_documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE kb_retired_documents FORCE ROW LEVEL SECURITY;
CREATE POLICY kb_retired_documents_tenant ON kb_retired_documents
    USING (tenant_id = current_setting('careflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('careflow.tenant_id', true));

GRANT SELECT, INSERT ON kb_retired_documents TO careflow_app;
