-- Ambient notes (issue #16): one row per note (workflow ambient-note-<encounter id>) with its review
-- and coding outcome and the quality measures; the physicians' enrolled voice profiles (speaker
-- embeddings, which diarization compares the badge's speakers with).  No note text here: the note is in
-- the EHR, the transcript in the PHI store.
CREATE TABLE ambient_notes (
    workflow_id         text PRIMARY KEY,
    encounter_id        text NOT NULL,
    physician_id        text NOT NULL,
    specialty           text NOT NULL,
    outcome             text NOT NULL CHECK (outcome IN ('signed', 'discarded')),
    edit_distance       double precision,          -- word-level, draft vs signed; NULL when discarded
    signing_minutes     double precision NOT NULL, -- from the note in the EHR to the physician's decision
    note_ready_minutes  double precision,          -- from the encounter's end: the 60-minute SLA
    codes               jsonb,                     -- the coder's final ICD-10-CM codes, once reviewed
    coded_by            text,
    decided_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ambient_notes_physician ON ambient_notes (physician_id, decided_at DESC);

CREATE TABLE ambient_voice_profiles (
    practitioner_id     text PRIMARY KEY,
    embedding           real[] NOT NULL,           -- resemblyzer's 256-dimensional d-vector, unit length
    seconds             double precision NOT NULL, -- speech the profile was made from
    enrolled_at         timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON ambient_notes, ambient_voice_profiles TO careflow_app;
