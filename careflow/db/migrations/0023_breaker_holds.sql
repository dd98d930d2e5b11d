-- A DR failover holds a provider's breaker open while the self-hosted inference server it names is down
-- (seed P20): no half-open probe lets a clinical request find out again, its tiers answer from their
-- fallback, and the failover releases the hold (closing the breaker) once the server answers again.
ALTER TABLE llm_breakers ADD COLUMN held_by text;
