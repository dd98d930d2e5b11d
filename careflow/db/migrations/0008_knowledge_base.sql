-- Knowledge base: source documents and their embedded chunks (all-MiniLM-L6-v2, 384 dims, normalised).
-- Every row carries its tenant.  The store filters by tenant_id in every statement; row-level security,
-- forced for the table owner too, is the backstop for the application role: a session sees only the
-- rows of the tenant it names with `SET LOCAL careflow.tenant_id` (none when unset).  Superusers
-- bypass RLS, which is why the SQL's own filter is never optional.

CREATE TABLE kb_documents (
    tenant_id           text NOT NULL,
    document_id         text NOT NULL,
    title               text NOT NULL,
    source_organization text NOT NULL,
    effective_date      date NOT NULL,
    doc_type            text NOT NULL CHECK (doc_type IN ('guideline', 'protocol', 'formulary', 'payer_policy')),
    version             text NOT NULL,
    content_hash        text NOT NULL,  -- sha256 of the source file: unchanged sources are skipped
    source_file         text NOT NULL,  -- name relative to the ingested folder
    chunk_count         integer NOT NULL,
    embedding_model     text NOT NULL,
    ingested_at         timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, document_id)
);
CREATE INDEX kb_documents_hash_idx ON kb_documents (tenant_id, content_hash);

CREATE TABLE kb_chunks (
    tenant_id           text NOT NULL,
    chunk_id            text NOT NULL,  -- "<document_id>@v<version>#<section number>/<ordinal>"
    document_id         text NOT NULL,
    ordinal             integer NOT NULL,  -- position in the document
    section             text NOT NULL,  -- full heading, "3.1 Outpatient empiric therapy"
    section_number      text NOT NULL,
    document_title      text NOT NULL,
    source_organization text NOT NULL,
    effective_date      date NOT NULL,
    doc_type            text NOT NULL,
    version             text NOT NULL,
    text                text NOT NULL,
    content_hash        text NOT NULL,  -- sha256 of the embedded text ("Title — Section" + text)
    embedding           vector(384) NOT NULL,
    PRIMARY KEY (tenant_id, chunk_id),
    FOREIGN KEY (tenant_id, document_id) REFERENCES kb_documents (tenant_id, document_id) ON DELETE CASCADE
);
CREATE INDEX kb_chunks_document_idx ON kb_chunks (tenant_id, document_id);
CREATE INDEX kb_chunks_hash_idx ON kb_chunks (tenant_id, content_hash);
-- Cosine ANN; queries filter by tenant (and doc type) with hnsw.iterative_scan so the filter does not
-- starve the result list.
CREATE INDEX kb_chunks_embedding_hnsw ON kb_chunks USING hnsw (embedding vector_cosine_ops)
    WITH (m = 16, ef_construction = 64);

ALTER TABLE kb_documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE kb_documents FORCE ROW LEVEL SECURITY;
ALTER TABLE kb_chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE kb_chunks FORCE ROW LEVEL SECURITY;

CREATE POLICY kb_documents_tenant ON kb_documents
    USING (tenant_id = current_setting('careflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('careflow.tenant_id', true));
CREATE POLICY kb_chunks_tenant ON kb_chunks
    USING (tenant_id = current_setting('careflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('careflow.tenant_id', true));

GRANT SELECT, INSERT, UPDATE, DELETE ON kb_documents, kb_chunks TO careflow_app;
