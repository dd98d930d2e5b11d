-- AI observability (issue #18, seed P5): what users say about each AI response.  One row per response
-- per team (the last word wins); the reason is a category, never free text (no PHI in here).
CREATE TABLE llm_feedback (
    response_id  text NOT NULL,                 -- llm_calls.request_id (the API's request-id / message id)
    team_id      text NOT NULL,
    use_case     text NOT NULL,                 -- the feature, as the call recorded it
    model        text,                          -- the model (version) that answered
    rating       text CHECK (rating IN ('up', 'down')),
    flagged      boolean NOT NULL DEFAULT false,
    reason       text CHECK (reason IN ('inaccurate', 'unsafe', 'fabricated', 'incomplete', 'offensive', 'other')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (response_id, team_id)
);
CREATE INDEX llm_calls_use_case_model_created ON llm_calls (use_case, model, created_at);

GRANT SELECT, INSERT, UPDATE ON llm_feedback TO careflow_app;
