"""One asyncpg pool per process."""

from __future__ import annotations

import json

import asyncpg

from shared.settings import DatabaseSettings


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects.
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(settings: DatabaseSettings) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.database_url.get_secret_value(),
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        init=_init_connection,
        command_timeout=60,
    )
