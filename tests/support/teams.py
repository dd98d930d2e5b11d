"""A gateway team permitted PHI in the default tenant, and its API token: what a test of an event route
that reads charts (discharges, encounter audio) calls the API as."""

from __future__ import annotations

import uuid
from decimal import Decimal

from careflow.config import Settings
from careflow.db.pool import create_pool
from careflow.llm.config import GatewayConfig
from careflow.llm.teams import Team, TeamStore, sign_team_token


async def chart_reader_token(settings: Settings) -> str:
    team_id = f"team-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(settings)
    try:
        team = Team(
            team_id=team_id,
            monthly_budget_usd=Decimal(10),
            tokens_per_minute=10_000,
            phi_permitted=True,
            kb_tenants=["default"],
        )
        await TeamStore(pool).create(team)
    finally:
        await pool.close()
    return sign_team_token(GatewayConfig().signing_secret(settings), team_id, ttl_days=1)
