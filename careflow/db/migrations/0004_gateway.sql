-- AI gateway control plane: teams, per-provider circuit breakers, token rate windows, monthly
-- budgets with reservations, and one row per LLM call for cost attribution.  Rows hold ids,
-- counts and money only, never prompt or completion text.

CREATE TABLE teams (
    team_id             text PRIMARY KEY CHECK (team_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    display_name        text NOT NULL DEFAULT '',
    allowed_tiers       text[] NOT NULL DEFAULT ARRAY['standard', 'efficient']
        CHECK (allowed_tiers <@ ARRAY['frontier', 'standard', 'efficient']),
    monthly_budget_usd  numeric(14, 6) NOT NULL CHECK (monthly_budget_usd >= 0),
    tokens_per_minute   integer NOT NULL CHECK (tokens_per_minute > 0),
    phi_permitted       boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- One row per provider, shared by every worker process and API replica.  `failures` holds the
-- timestamps of recent failures (pruned to the window on every write), so "5 failures in 60 s" is
-- one atomic UPDATE.  half_open admits exactly one probe: the UPDATE that moves open -> half_open
-- is the admission.
CREATE TABLE llm_breakers (
    provider          text PRIMARY KEY,
    state             text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures          timestamptz[] NOT NULL DEFAULT '{}',
    opened_at         timestamptz,
    probe_started_at  timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Sliding 60 s token window per team: one row per admitted call (estimate, then actual tokens).
CREATE TABLE llm_rate_events (
    id        bigserial PRIMARY KEY,
    team_id   text NOT NULL REFERENCES teams (team_id) ON DELETE CASCADE,
    at        timestamptz NOT NULL,
    tokens    integer NOT NULL CHECK (tokens >= 0)
);
CREATE INDEX llm_rate_events_team_at ON llm_rate_events (team_id, at);

-- Month ledger per team: `reserved_usd` is held by calls in flight, `spent_usd` is reconciled.
-- The reservation is a conditional UPDATE (spent + reserved + estimate <= budget), so concurrent
-- calls cannot overspend.
CREATE TABLE llm_budget_ledger (
    team_id       text NOT NULL REFERENCES teams (team_id) ON DELETE CASCADE,
    month         date NOT NULL CHECK (extract(day FROM month) = 1),
    spent_usd     numeric(14, 6) NOT NULL DEFAULT 0,
    reserved_usd  numeric(14, 6) NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
    PRIMARY KEY (team_id, month)
);

-- Threshold events (alert at 80 %, downgrade at 90 %, block at 100 %), once per team and month.
CREATE TABLE llm_budget_events (
    team_id       text NOT NULL REFERENCES teams (team_id) ON DELETE CASCADE,
    month         date NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('alert', 'downgrade', 'block')),
    used_fraction numeric(8, 4) NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, month, kind)
);

-- Cost attribution: one row per gateway call (successful or not), with quality signals.
CREATE TABLE llm_calls (
    id                  bigserial PRIMARY KEY,
    request_id          text NOT NULL,
    team_id             text NOT NULL,
    use_case            text NOT NULL,
    requested_tier      text NOT NULL,
    tier                text NOT NULL,
    provider            text,
    model               text,
    prompt_tokens       integer NOT NULL DEFAULT 0,
    completion_tokens   integer NOT NULL DEFAULT 0,
    cached_tokens       integer NOT NULL DEFAULT 0,
    cost_usd            numeric(14, 6) NOT NULL DEFAULT 0,
    latency_ms          double precision NOT NULL DEFAULT 0,
    outcome             text NOT NULL,
    fallback_used       boolean NOT NULL DEFAULT false,
    contains_phi        boolean NOT NULL DEFAULT false,
    finish_reason       text,
    citation_count      integer,
    disclaimer_present  boolean,
    response_chars      integer,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_team_created ON llm_calls (team_id, created_at);
CREATE INDEX llm_calls_request ON llm_calls (request_id);

-- Admit `p_tokens` into the team's sliding window, or say how long to wait.  One round trip: the
-- advisory lock serialises admissions of one team, and each statement of a volatile plpgsql
-- function sees what other transactions committed before it, so concurrent calls cannot both pass.
-- Returns (event_id, NULL) when admitted, (NULL, seconds until enough tokens leave the window)
-- otherwise.  A request larger than the whole limit is admitted only into an empty window.
CREATE FUNCTION llm_rate_admit(
    p_team text, p_tokens integer, p_limit integer, p_window_s double precision, p_at timestamptz
) RETURNS TABLE (event_id bigint, retry_after_s double precision)
LANGUAGE plpgsql AS $$
DECLARE
    v_now   timestamptz := coalesce(p_at, now());
    v_since timestamptz := coalesce(p_at, now()) - make_interval(secs => p_window_s);
    v_need  bigint := least(p_tokens, p_limit);
    v_used  bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('careflow.llm_rate:' || p_team, 0));
    DELETE FROM llm_rate_events e
     WHERE e.team_id = p_team AND e.at <= v_since - make_interval(secs => p_window_s);
    SELECT coalesce(sum(e.tokens), 0) INTO v_used
      FROM llm_rate_events e WHERE e.team_id = p_team AND e.at > v_since;
    IF v_used + v_need <= p_limit THEN
        INSERT INTO llm_rate_events (team_id, at, tokens) VALUES (p_team, v_now, p_tokens)
        RETURNING id INTO event_id;
        retry_after_s := NULL;
        RETURN NEXT;
        RETURN;
    END IF;
    -- The oldest events leave the window first: wait until enough of them have left.
    SELECT extract(epoch FROM (w.at + make_interval(secs => p_window_s) - v_now))::double precision
      INTO retry_after_s
      FROM (SELECT e.at, v_used - sum(e.tokens) OVER (ORDER BY e.at, e.id) AS remaining
              FROM llm_rate_events e WHERE e.team_id = p_team AND e.at > v_since) w
     WHERE w.remaining + v_need <= p_limit
     ORDER BY w.at
     LIMIT 1;
    event_id := NULL;
    RETURN NEXT;
END
$$;

-- The application role (0003) reads and writes the gateway's tables where it exists.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'careflow_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE
           ON teams, llm_breakers, llm_rate_events, llm_budget_ledger, llm_budget_events, llm_calls
           TO careflow_app;
        GRANT USAGE ON SEQUENCE llm_rate_events_id_seq, llm_calls_id_seq TO careflow_app;
        GRANT EXECUTE ON FUNCTION llm_rate_admit(text, integer, integer, double precision, timestamptz)
           TO careflow_app;
    END IF;
END
$$;
