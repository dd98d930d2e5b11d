"""The prior-auth pipeline's table in Postgres: `pa_metrics` (migration 0010), one row per workflow,
upserted at each milestone (draft ready, decided) so the latest state wins."""

from __future__ import annotations

import asyncpg

from careflow.models.prior_auth import MetricsRecord
from careflow.prior_auth.metrics import edit_chars, seconds_in_review, seconds_to_draft

_UPSERT = """INSERT INTO pa_metrics (workflow_id, tenant_id, order_id, item_code, payer, priority,
       started_at, draft_ready_at, decided_at, seconds_to_draft, seconds_in_review,
       edit_chars, revisions, template_used, outcome)
   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
   ON CONFLICT (workflow_id) DO UPDATE SET
       payer = EXCLUDED.payer, draft_ready_at = EXCLUDED.draft_ready_at,
       decided_at = EXCLUDED.decided_at, seconds_to_draft = EXCLUDED.seconds_to_draft,
       seconds_in_review = EXCLUDED.seconds_in_review, edit_chars = EXCLUDED.edit_chars,
       revisions = EXCLUDED.revisions, template_used = EXCLUDED.template_used,
       outcome = EXCLUDED.outcome, updated_at = now()"""


async def record_metrics(pool: asyncpg.Pool, m: MetricsRecord) -> None:
    """Upsert the run's row (keyed by workflow id: a retried activity writes the same row)."""
    await pool.execute(
        _UPSERT,
        m.workflow_id,
        m.tenant_id,
        m.order_id,
        m.item_code,
        m.payer,
        m.priority.value,
        m.started_at,
        m.draft_ready_at,
        m.decided_at,
        seconds_to_draft(m),
        seconds_in_review(m),
        edit_chars(m),
        m.revisions,
        m.template_used,
        m.outcome,
    )
