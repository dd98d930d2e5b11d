-- Disaster recovery (issue #19, seed P20): the backup catalog.  One row per backup run (a nightly full
-- backup, or a WAL shipment), one per object it stored: where (key, the store's version id), what
-- (kind), and its SHA-256, which a restore checks before using it.  No PHI: ids, names, sizes, times.
CREATE TABLE dr_backups (
    backup_id     text PRIMARY KEY,      -- the BackupWorkflow's id
    kind          text NOT NULL CHECK (kind IN ('full', 'wal')),
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'complete', 'failed', 'expired')),
    requested_by  text NOT NULL,
    store         text NOT NULL,         -- a folder or s3://bucket/prefix (never a credential)
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    start_wal     text,                  -- a full backup's first WAL segment (retention keeps from here)
    stop_lsn      text,
    data_as_of    timestamptz,           -- the newest moment the backup restores to without more WAL
    bytes         bigint NOT NULL DEFAULT 0,
    error         text
);
CREATE INDEX dr_backups_finished ON dr_backups (status, kind, finished_at DESC);

CREATE TABLE dr_backup_objects (
    key        text NOT NULL,
    version    text NOT NULL,
    backup_id  text NOT NULL REFERENCES dr_backups (backup_id),
    kind       text NOT NULL CHECK (kind IN ('base', 'wal', 'models', 'kb-sources', 'temporal', 'manifest')),
    sha256     text NOT NULL,
    bytes      bigint NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, version)
);
CREATE INDEX dr_backup_objects_backup ON dr_backup_objects (backup_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON dr_backups, dr_backup_objects TO careflow_app;
