-- Which tenants' knowledge bases a team may query through POST /v1/rag/query.  A team token used to
-- reach any tenant named in the request body; now the tenant must be one of the team's.  Teams made
-- before this migration keep the one tenant every deployment has: 'default'.
ALTER TABLE teams ADD COLUMN kb_tenants text[] NOT NULL DEFAULT ARRAY['default']::text[];
