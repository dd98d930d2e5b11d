-- Model lifecycle (issue #18): which model version answers each AI feature's requests, read by the
-- gateway (a rollback is an update of this row, never a code deployment), and every change to it.
CREATE TABLE model_deployments (
    feature      text PRIMARY KEY,              -- an AI feature (a gateway task), e.g. note_draft
    champion     text,                          -- the registry version that serves; NULL: the tier route
    candidate    text,                          -- the version in shadow or canary
    stage        text CHECK (stage IN ('shadow', 'canary')),
    percent      integer NOT NULL DEFAULT 0 CHECK (percent BETWEEN 0 AND 100),
    updated_by   text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((candidate IS NULL) = (stage IS NULL))
);

CREATE TABLE model_deployment_events (
    id           bigserial PRIMARY KEY,
    event_key    text NOT NULL UNIQUE,          -- workflow id + step: a retried activity changes nothing twice
    feature      text NOT NULL,
    action       text NOT NULL,                 -- shadow | canary | promote | rollback
    champion     text,
    candidate    text,
    stage        text,
    percent      integer NOT NULL,
    actor        text NOT NULL,
    reason       text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_deployment_events_feature ON model_deployment_events (feature, id);

GRANT SELECT, INSERT, UPDATE ON model_deployments TO careflow_app;
GRANT SELECT, INSERT ON model_deployment_events TO careflow_app;
GRANT USAGE ON SEQUENCE model_deployment_events_id_seq TO careflow_app;
