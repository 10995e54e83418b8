"""Versioned plain-SQL migrations (`migrations/NNNN_name.sql`), applied in order, each in its own transaction.

Safe to run twice (applied versions are recorded in `schema_migrations`) and by several processes at once
(a session advisory lock serializes them; the losers find everything applied). A migration whose file changed
after it was applied stops the run: fix forward with a new file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit, urlunsplit

import asyncpg

logger = logging.getLogger(__name__)

_LOCK_KEY = 0x1EAD_1E  # any constant shared by all leadwire processes
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover() -> list[Migration]:
    found = []
    for entry in resources.files("shared.db").joinpath("migrations").iterdir():
        if match := _FILE.match(entry.name):
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {versions}")
    return found


async def ensure_database(dsn: str) -> bool:
    """Create the database named in `dsn` if it does not exist. Returns True when it was created."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError("DATABASE_URL must name a database made of letters, digits and underscores")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        if await admin.fetchval("select 1 from pg_database where datname = $1", name):
            return False
        try:
            await admin.execute(f'create database "{name}"')
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await admin.close()


async def migrate(dsn: str) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("select pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "create table if not exists schema_migrations ("
                " version integer primary key, name text not null, checksum text not null,"
                " applied_at timestamptz not null default now())"
            )
            applied = {r["version"]: r["checksum"] for r in await conn.fetch("select * from schema_migrations")}
            done = []
            for migration in discover():
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version:04d}_{migration.name} changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                logger.info("applied migration %04d_%s", migration.version, migration.name)
                done.append(migration.version)
            return done
        finally:
            await conn.execute("select pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
