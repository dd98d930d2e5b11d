-- Notifications (push/webhook/in-basket), deduplicated by a key derived from the workflow id and step.
CREATE TABLE notifications (
    dedup_key     text PRIMARY KEY,
    channel       text NOT NULL,            -- 'webhook' | 'record'
    recipient_id  text,                     -- practitioner / role id, never a name
    kind          text NOT NULL,            -- 'lab-alert', 'pa-review', ...
    workflow_id   text,
    body          jsonb NOT NULL,           -- what the receiver gets; may hold PHI (database, not logs)
    status        text NOT NULL DEFAULT 'pending',  -- pending | delivered | failed
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX notifications_recipient ON notifications (recipient_id, created_at DESC);
