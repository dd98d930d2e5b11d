-- careflow's sandbox payer (careflow/payer/sandbox.py): one row per prior-authorization Claim, keyed by
-- the Claim's business identifier so a resubmission answers the same ClaimResponse.
CREATE TABLE payer_claims (
    claim_identifier   text PRIMARY KEY,                -- "<system>|<value>" of Claim.identifier
    claim_response_id  text NOT NULL UNIQUE,
    bundle             jsonb NOT NULL,                  -- the PAS request Bundle as received (PHI: database only)
    item_code          text NOT NULL,
    priority           text NOT NULL,                   -- processpriority code: stat | normal
    decision           text NOT NULL,                   -- approved | pended | denied (current)
    final_decision     text NOT NULL,                   -- what a pended claim becomes once reviewed
    disposition        text NOT NULL,
    preauth_ref        text,                            -- set once approved
    inquiries          integer NOT NULL DEFAULT 0,
    pend_inquiries     integer NOT NULL DEFAULT 0,      -- inquiries after which a pended claim is decided
    pend_until         timestamptz,                     -- or this moment, whichever comes first
    received_at        timestamptz NOT NULL DEFAULT now(),
    decided_at         timestamptz
);
CREATE INDEX payer_claims_pended ON payer_claims (received_at) WHERE decision = 'pended';

GRANT SELECT, INSERT, UPDATE ON payer_claims TO careflow_app;
