-- The team careflow's own pipelines bill their LLM calls to (lab alerts, prior auth, notes, ...).
-- PHI-permitted: pipeline calls carry PHI, and the gateway still sends them only to PHI-permitted
-- providers.  Operators change its budget and limits with `careflow teams set careflow-pipelines`.
INSERT INTO teams (team_id, display_name, allowed_tiers, monthly_budget_usd, tokens_per_minute, phi_permitted)
VALUES ('careflow-pipelines', 'careflow clinical pipelines', ARRAY['frontier', 'standard', 'efficient'],
        5000, 2000000, true)
ON CONFLICT (team_id) DO NOTHING;
