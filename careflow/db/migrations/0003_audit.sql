-- HIPAA audit trail: one row per PHI access, PHI write, AI inference with PHI, or reviewer action.
-- Append-only and hash-chained: row_hash = sha256(prev_hash || '|' || id || '|' || content), where
-- content is the canonical JSON of the row's event fields (careflow/audit/trail.py builds it and
-- `careflow audit verify` recomputes it).  Rows hold ids and enums only, never PHI content.

-- The application's role: it may read and append, never change or remove.  Roles are cluster-wide,
-- so every database migrated on the same server shares it (and two may race to create it).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'careflow_app') THEN
        CREATE ROLE careflow_app LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

CREATE SEQUENCE audit_events_id_seq AS bigint;

CREATE TABLE audit_events (
    id           bigint PRIMARY KEY DEFAULT nextval('audit_events_id_seq'),
    -- Natural key of an idempotent writer (workflow id + step); NULL for plain events.
    event_key    text UNIQUE,
    event_type   text NOT NULL
        CHECK (event_type IN ('phi-access', 'phi-write', 'ai-inference', 'reviewer-action')),
    actor        text NOT NULL,
    actor_type   text NOT NULL,
    action       text NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
    outcome      text NOT NULL CHECK (outcome IN ('success', 'failure', 'rejected')),
    patient_id   text,
    resource_type text,
    resource_id  text,
    request_id   text,
    workflow_id  text,
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at  timestamptz NOT NULL,
    prev_hash    text NOT NULL,
    row_hash     text NOT NULL
);
ALTER SEQUENCE audit_events_id_seq OWNED BY audit_events.id;

CREATE INDEX audit_events_patient_idx ON audit_events (patient_id, occurred_at);
CREATE INDEX audit_events_occurred_idx ON audit_events (occurred_at);
CREATE INDEX audit_events_request_idx ON audit_events (request_id) WHERE request_id IS NOT NULL;

-- Append one event.  The advisory lock serialises appenders across processes, so ids grow in chain
-- order and every row links to the row committed just before it.  In a VOLATILE function each
-- statement takes a fresh snapshot, so the SELECT after the lock sees the previous holder's commit.
-- A repeated event_key returns the existing row and appends nothing (retried activities).
CREATE FUNCTION audit_append(p_content text, OUT event_id bigint, OUT inserted boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c jsonb := p_content::jsonb;
    v_key text := c->>'event_key';
    v_prev text;
BEGIN
    PERFORM pg_advisory_xact_lock(212118993);  -- 0x0CA4ADD1, careflow's audit chain
    IF v_key IS NOT NULL THEN
        SELECT a.id INTO event_id FROM audit_events a WHERE a.event_key = v_key;
        IF FOUND THEN
            inserted := false;
            RETURN;
        END IF;
    END IF;
    SELECT a.row_hash INTO v_prev FROM audit_events a ORDER BY a.id DESC LIMIT 1;
    v_prev := coalesce(v_prev, repeat('0', 64));
    event_id := nextval('audit_events_id_seq');
    INSERT INTO audit_events (id, event_key, event_type, actor, actor_type, action, outcome, patient_id,
                              resource_type, resource_id, request_id, workflow_id, detail, occurred_at,
                              prev_hash, row_hash)
    VALUES (event_id, v_key, c->>'event_type', c->>'actor', c->>'actor_type', c->>'action',
            c->>'outcome', c->>'patient_id', c->>'resource_type', c->>'resource_id', c->>'request_id',
            c->>'workflow_id', coalesce(c->'detail', '{}'::jsonb), (c->>'occurred_at')::timestamptz,
            v_prev,
            encode(sha256(convert_to(v_prev || '|' || event_id::text || '|' || p_content, 'UTF8')), 'hex'));
    inserted := true;
END
$$;

-- Nobody changes or removes an audit row, the table owner and superusers included.  (A superuser can
-- still switch triggers off; the hash chain is what exposes that.)
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

REVOKE ALL ON audit_events FROM PUBLIC;
REVOKE ALL ON SEQUENCE audit_events_id_seq FROM PUBLIC;
GRANT SELECT, INSERT ON audit_events TO careflow_app;
GRANT USAGE ON SEQUENCE audit_events_id_seq TO careflow_app;
GRANT EXECUTE ON FUNCTION audit_append(text) TO careflow_app;
