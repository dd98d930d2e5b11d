-- Golden-query evaluations (issue #18, seed P5 layer 3): each run's mean similarity per feature and model
-- version.  A version's first score is its baseline; a later run more than 10 % below the champion's
-- baseline is a regression.  No PHI: ids of golden cases and numbers only.
CREATE TABLE golden_runs (
    run_key     text PRIMARY KEY,               -- workflow id + step: a retried activity records once
    feature     text NOT NULL,
    version     text NOT NULL,                  -- the registry's version, or 'base'
    trigger     text NOT NULL,                  -- shadow / canary / promote / schedule / manual
    n           integer NOT NULL,
    score       double precision NOT NULL,
    baseline    double precision,
    regressed   boolean NOT NULL,
    worst       jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX golden_runs_feature_version ON golden_runs (feature, version, created_at);

GRANT SELECT, INSERT ON golden_runs TO careflow_app;
