-- Admit an AI gateway call in one round trip (careflow.llm.admission): the token estimate into the
-- team's 60 s window (llm_rate_admit, 0004) and, only if that admits it, the worst-case cost held
-- on the team's month row, created on first use.  ON CONFLICT ... DO UPDATE re-checks the budget
-- condition on the locked row, so concurrent calls together never overspend.  A call refused for
-- its budget takes no tokens: its rate event is removed in the same transaction.
CREATE FUNCTION llm_admit_and_hold(
    p_team text, p_tokens integer, p_limit integer, p_window_s double precision, p_at timestamptz,
    p_month date, p_estimate numeric
) RETURNS TABLE (event_id bigint, retry_after_s double precision, held boolean, used_usd numeric)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT a.event_id, a.retry_after_s INTO event_id, retry_after_s
      FROM llm_rate_admit(p_team, p_tokens, p_limit, p_window_s, p_at) a;
    held := false;
    IF event_id IS NULL THEN  -- over the rate limit: retry_after_s says when
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO llm_budget_ledger AS l (team_id, month, reserved_usd)
    SELECT p_team, p_month, p_estimate FROM teams t
     WHERE t.team_id = p_team AND p_estimate <= t.monthly_budget_usd
    ON CONFLICT (team_id, month) DO UPDATE SET reserved_usd = l.reserved_usd + EXCLUDED.reserved_usd
     WHERE l.spent_usd + l.reserved_usd + EXCLUDED.reserved_usd
           <= (SELECT t.monthly_budget_usd FROM teams t WHERE t.team_id = l.team_id)
    RETURNING l.spent_usd + l.reserved_usd INTO used_usd;
    held := FOUND;
    IF NOT held THEN  -- over the budget: give the tokens back, say what is used
        DELETE FROM llm_rate_events e WHERE e.id = event_id;
        event_id := NULL;
        SELECT coalesce(sum(l.spent_usd + l.reserved_usd), 0) INTO used_usd
          FROM llm_budget_ledger l WHERE l.team_id = p_team AND l.month = p_month;
    END IF;
    RETURN NEXT;
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'careflow_app') THEN
        GRANT EXECUTE ON FUNCTION
            llm_admit_and_hold(text, integer, integer, double precision, timestamptz, date, numeric)
           TO careflow_app;
    END IF;
END
$$;
