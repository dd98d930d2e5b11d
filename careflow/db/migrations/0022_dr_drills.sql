-- Disaster recovery (issue #19, seed P20): each restore drill (DRDrillWorkflow).  The row is written on
-- the live primary as the drill begins (its marker: found in the restored copy, nothing committed
-- before the drill was lost), then its findings: the backup restored, how long the restore took, how
-- old the restored data was, every check, and each feature judged against its objectives.
-- No PHI: ids, times, sizes, table names, counts.
CREATE TABLE dr_drills (
    drill_id      text PRIMARY KEY,
    requested_by  text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    outcome       text NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'passed', 'failed')),
    failed_check  text,
    reason        text,
    backup_id     text,
    target_at     timestamptz,           -- the point in time asked for (NULL: all the WAL there was)
    restore_s     double precision,
    data_age_s    double precision,
    restored_to   timestamptz,           -- the last transaction replayed
    checks        jsonb NOT NULL DEFAULT '{}',
    objectives    jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX dr_drills_started ON dr_drills (started_at DESC);

GRANT SELECT, INSERT, UPDATE ON dr_drills TO careflow_app;
