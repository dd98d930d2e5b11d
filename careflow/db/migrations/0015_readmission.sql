-- Readmission risk (issue #17): one row per discharge and scoring model version (champion and its
-- shadow challenger), the care-coordination worklist, and the nightly drift alerts.  The factors are
-- the model's own contributions (feature name, value, log-odds); the narrative cites only them.
CREATE TABLE readmission_scores (
    encounter_id       text NOT NULL,             -- the EHR's Encounter id (workflow readmission-<id>)
    role               text NOT NULL CHECK (role IN ('champion', 'challenger')),
    model_version      text NOT NULL,             -- the registry's version that produced the score
    workflow_id        text NOT NULL,
    tenant_id          text NOT NULL,
    source             text NOT NULL,             -- adt | fhir | nightly
    patient_id         text NOT NULL,             -- the EHR's Patient id
    probability        double precision NOT NULL,
    tier               text NOT NULL,             -- low | moderate | high
    factors            jsonb NOT NULL,
    lace               integer NOT NULL,
    narrative          text NOT NULL DEFAULT '',
    narrative_engine   text NOT NULL DEFAULT '',
    risk_assessment_id text,                      -- champion only: the FHIR RiskAssessment
    task_id            text,                      -- champion, high tier: the care-coordination Task
    discharged_at      timestamptz NOT NULL,
    scored_at          timestamptz NOT NULL DEFAULT now(),
    readmitted         boolean,                   -- the outcome, once known: `careflow risk compare`
    PRIMARY KEY (encounter_id, role, model_version)
);
CREATE INDEX readmission_scores_discharged ON readmission_scores (discharged_at);
CREATE INDEX readmission_scores_worklist ON readmission_scores (role, tier, probability DESC);

CREATE TABLE readmission_quality_alerts (
    workflow_id        text PRIMARY KEY,          -- the nightly run that found the shift
    model_version      text NOT NULL,
    window_start       timestamptz NOT NULL,
    window_end         timestamptz NOT NULL,
    scored             integer NOT NULL,
    discharged         integer NOT NULL,
    psi                double precision NOT NULL,
    psi_threshold      double precision NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON readmission_scores, readmission_quality_alerts TO careflow_app;
