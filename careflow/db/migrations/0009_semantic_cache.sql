-- The clinically safe semantic cache of knowledge-base answers (careflow/kb/cache.py).  Per tenant;
-- a lookup takes the nearest entries by cosine similarity and reuses one only when its clinically
-- decisive terms agree with the question's (careflow/kb/clinical_terms.py), it has not expired (TTL
-- of its shortest-lived cited doc type) and no cited document has changed since (invalidated_at).
-- Questions here carry no patient data: queries with patient context never reach the cache.
CREATE TABLE kb_answer_cache (
    id              bigserial PRIMARY KEY,
    tenant_id       text NOT NULL,
    question        text NOT NULL,
    question_key    text NOT NULL,            -- sha256 of the normalised question
    decisive_terms  text[] NOT NULL,          -- as extracted when stored (lookups recompute them)
    embedding       vector(384) NOT NULL,
    answer          jsonb NOT NULL,           -- answer text + citations, as served
    document_ids    text[] NOT NULL,
    doc_types       text[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    invalidated_at  timestamptz,
    hits            bigint NOT NULL DEFAULT 0,
    last_hit_at     timestamptz
);

-- One live entry per question and tenant: a repeated miss refreshes it.
CREATE UNIQUE INDEX kb_answer_cache_live_key ON kb_answer_cache (tenant_id, question_key)
    WHERE invalidated_at IS NULL;
CREATE INDEX kb_answer_cache_embedding_idx ON kb_answer_cache USING hnsw (embedding vector_cosine_ops);
CREATE INDEX kb_answer_cache_documents_idx ON kb_answer_cache USING gin (document_ids);
CREATE INDEX kb_answer_cache_expires_idx ON kb_answer_cache (expires_at);

-- Tenant isolation backed by row-level security, forced so the table owner is held to it too.  The
-- store layer sets `SET LOCAL careflow.tenant_id` in every transaction and filters by tenant itself.
ALTER TABLE kb_answer_cache ENABLE ROW LEVEL SECURITY;
ALTER TABLE kb_answer_cache FORCE ROW LEVEL SECURITY;
CREATE POLICY kb_answer_cache_tenant ON kb_answer_cache
    USING (tenant_id = current_setting('careflow.tenant_id', true))
    WITH CHECK (tenant_id = current_setting('careflow.tenant_id', true));

GRANT SELECT, INSERT, UPDATE, DELETE ON kb_answer_cache TO careflow_app;
GRANT USAGE ON SEQUENCE kb_answer_cache_id_seq TO careflow_app;
