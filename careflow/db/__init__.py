"""Postgres access: the asyncpg pool (pgvector registered), migrations, the embedded server."""
