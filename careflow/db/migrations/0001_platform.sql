-- Platform foundation: pgvector, and the table the platform canary writes its probes to.
CREATE EXTENSION IF NOT EXISTS vector;

-- One row per probe (natural key: workflow id + task queue), so a retried probe overwrites itself.
CREATE TABLE platform_probes (
    probe_key   text PRIMARY KEY,
    task_queue  text NOT NULL,
    worker      text NOT NULL,
    probed_at   timestamptz NOT NULL DEFAULT now()
);
