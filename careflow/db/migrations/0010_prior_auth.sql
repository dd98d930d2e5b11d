-- Prior authorization (issue #6): one metrics row per PA workflow, for the time-to-draft SLA, review
-- load and the denial-rate tracking the seed asks for.  Ids, codes and figures only: no PHI, no text.
CREATE TABLE pa_metrics (
    workflow_id        text PRIMARY KEY,          -- prior-auth-<order id>
    tenant_id          text NOT NULL,
    order_id           text NOT NULL,
    item_code          text NOT NULL,             -- RxNorm / CPT of the requested item
    payer              text,                      -- payer organisation name
    priority           text NOT NULL,             -- standard | expedited
    started_at         timestamptz NOT NULL,      -- order received
    draft_ready_at     timestamptz,
    decided_at         timestamptz,               -- staff decision (or deadline expiry)
    seconds_to_draft   double precision,
    seconds_in_review  double precision,
    edit_chars         integer,                   -- characters the reviewer changed in the approved letter
    revisions          integer NOT NULL DEFAULT 0,  -- request_changes rounds
    template_used      boolean NOT NULL DEFAULT false,
    outcome            text NOT NULL,             -- awaiting_review | approved | pended | denied | rejected | expired
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pa_metrics_outcome ON pa_metrics (tenant_id, payer, outcome);
CREATE INDEX pa_metrics_started ON pa_metrics (started_at);

GRANT SELECT, INSERT, UPDATE ON pa_metrics TO careflow_app;
