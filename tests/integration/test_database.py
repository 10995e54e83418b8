"""Migrations against the real PostgreSQL: idempotent, safe when run concurrently."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.db.migrate import discover, ensure_database, migrate
from tests.fixtures.infra import TEST_DSN, unique


async def _fresh_database() -> str:
    dsn = urlunsplit(urlsplit(TEST_DSN)._replace(path=f"/{unique('lw_mig_')}"))
    assert await ensure_database(dsn) is True
    assert await ensure_database(dsn) is False
    return dsn


async def _drop(dsn: str) -> None:
    admin = await asyncpg.connect(urlunsplit(urlsplit(dsn)._replace(path="/postgres")))
    try:
        await admin.execute(f'drop database if exists "{urlsplit(dsn).path.lstrip("/")}" with (force)')
    finally:
        await admin.close()


async def test_migrations_twice_and_concurrently() -> None:
    dsn = await _fresh_database()
    try:
        results = await asyncio.gather(*(migrate(dsn) for _ in range(4)))
        all_versions = [m.version for m in discover()]
        applied = sorted(v for result in results for v in result)
        assert applied == all_versions, "each migration applied exactly once across concurrent runs"
        assert await migrate(dsn) == []
        conn = await asyncpg.connect(dsn)
        try:
            recorded = [r["version"] for r in await conn.fetch("select version from schema_migrations order by 1")]
        finally:
            await conn.close()
        assert recorded == all_versions
    finally:
        await _drop(dsn)
