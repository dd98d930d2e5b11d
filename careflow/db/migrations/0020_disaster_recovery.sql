-- Disaster recovery (issue #19, seed P20).  Each failover's measured recovery: when the failure was
-- first seen, when the standby was promoted, the first write on the new primary (the RTO's end), the
-- replication lag at the time (the RPO), and each feature judged against its objectives.
-- No PHI: incident ids, times, sizes and operators' ids only.
CREATE TABLE dr_failovers (
    incident        text PRIMARY KEY,
    workflow_id     text NOT NULL,
    requested_by    text NOT NULL,
    approved_by     text,
    forced          boolean NOT NULL DEFAULT false,
    outcome         text NOT NULL DEFAULT 'in-progress',
    detected_at     timestamptz NOT NULL,
    promoted_at     timestamptz,
    first_write_at  timestamptz,       -- the first write the new primary took (set once)
    lag_bytes       bigint,
    synchronous     boolean,
    recovery        jsonb NOT NULL DEFAULT '[]',  -- per feature: RTO, RPO, objective, met
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Operations on the platform itself (a failover's fence, promote, switch) join the audit trail.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_event_type_check;
-- NOT VALID, then VALIDATE: the existing rows are checked without holding an exclusive lock meanwhile.
ALTER TABLE audit_events ADD CONSTRAINT audit_events_event_type_check
    CHECK (event_type IN ('phi-access', 'phi-write', 'ai-inference', 'reviewer-action', 'system-operation'))
    NOT VALID;
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_event_type_check;

GRANT SELECT, INSERT, UPDATE ON dr_failovers TO careflow_app;
