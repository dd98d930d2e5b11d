"""Teams of the gateway: allowed tiers, monthly budget, token rate limit, PHI permission and the tenants
whose knowledge base the team may query."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated

import asyncpg
import jwt
from pydantic import BaseModel, Field, StringConstraints

from careflow.llm.errors import UnknownTeam
from careflow.llm.types import Tier


@asynccontextmanager
async def connection(
    pool: asyncpg.Pool, conn: asyncpg.Connection | None
) -> AsyncIterator[asyncpg.Connection]:
    """The caller's connection, or one from the pool.  The gateway runs a call's steps on one
    connection: each pool acquire/release costs a round trip of its own (the release resets state)."""
    if conn is not None:
        yield conn
        return
    async with pool.acquire() as acquired:
        yield acquired


TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


PIPELINES_TEAM = "careflow-pipelines"  # the team every pipeline's AI calls bill to (migration 0006)


class Team(BaseModel):
    team_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    display_name: str = ""
    allowed_tiers: list[Tier] = Field(default_factory=lambda: [Tier.STANDARD, Tier.EFFICIENT])
    monthly_budget_usd: Decimal = Field(ge=0)
    tokens_per_minute: int = Field(gt=0)
    phi_permitted: bool = False
    kb_tenants: list[Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]] = Field(
        default_factory=lambda: ["default"]
    )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Team:
        return cls(
            team_id=row["team_id"],
            display_name=row["display_name"],
            allowed_tiers=[Tier(t) for t in row["allowed_tiers"]],
            monthly_budget_usd=row["monthly_budget_usd"],
            tokens_per_minute=row["tokens_per_minute"],
            phi_permitted=row["phi_permitted"],
            kb_tenants=list(row["kb_tenants"]),
        )


class TeamStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, team: Team) -> Team:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """INSERT INTO teams (team_id, display_name, allowed_tiers, monthly_budget_usd,
                                       tokens_per_minute, phi_permitted, kb_tenants)
                    VALUES ($1, $2, $3, $4, $5, $6, $7)
                    ON CONFLICT (team_id) DO NOTHING RETURNING *""",
                team.team_id,
                team.display_name,
                [t.value for t in team.allowed_tiers],
                team.monthly_budget_usd,
                team.tokens_per_minute,
                team.phi_permitted,
                team.kb_tenants,
            )
        if row is None:
            raise ValueError(f"team {team.team_id!r} already exists")
        return Team.from_row(row)

    async def get(self, team_id: str) -> Team:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM teams WHERE team_id = $1", team_id)
        if row is None:
            raise UnknownTeam(team_id)
        return Team.from_row(row)

    async def all(self) -> list[Team]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM teams ORDER BY team_id")
        return [Team.from_row(r) for r in rows]

    async def update(
        self,
        team_id: str,
        *,
        display_name: str | None = None,
        allowed_tiers: list[Tier] | None = None,
        monthly_budget_usd: Decimal | None = None,
        tokens_per_minute: int | None = None,
        phi_permitted: bool | None = None,
        kb_tenants: list[str] | None = None,
    ) -> Team:
        current = await self.get(team_id)
        changed = current.model_copy(
            update={
                k: v
                for k, v in {
                    "display_name": display_name,
                    "allowed_tiers": allowed_tiers,
                    "monthly_budget_usd": monthly_budget_usd,
                    "tokens_per_minute": tokens_per_minute,
                    "phi_permitted": phi_permitted,
                    "kb_tenants": kb_tenants,
                }.items()
                if v is not None
            }
        )
        team = Team.model_validate(changed.model_dump())
        async with self._pool.acquire() as conn:
            await conn.execute(
                """UPDATE teams SET display_name = $2, allowed_tiers = $3, monthly_budget_usd = $4,
                          tokens_per_minute = $5, phi_permitted = $6, kb_tenants = $7, updated_at = now()
                    WHERE team_id = $1""",
                team.team_id,
                team.display_name,
                [t.value for t in team.allowed_tiers],
                team.monthly_budget_usd,
                team.tokens_per_minute,
                team.phi_permitted,
                team.kb_tenants,
            )
        return team


def sign_team_token(secret: str, team_id: str, ttl_days: int) -> str:
    """A team's API token (HS256 JWT): `careflow teams token` prints one."""
    now = int(time.time())
    claims = {"team_id": team_id, "sub": f"team:{team_id}", "iat": now, "exp": now + ttl_days * 86400}
    return jwt.encode(claims, secret, algorithm="HS256")


def team_from_token(secret: str, token: str) -> str | None:
    """The team id a token names, or None when it does not verify (bad signature, expired, malformed)."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["team_id", "exp"]})
    except jwt.PyJWTError:
        return None
    team_id = claims.get("team_id")
    return team_id if isinstance(team_id, str) else None
