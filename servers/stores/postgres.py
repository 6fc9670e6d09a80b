"""PostgreSQL: the `sessions` table, the denylist and refresh families (asyncpg pool)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from servers.errors import ConfigError
from servers.settings import Settings
from servers.stores import SessionRecord, StoreGuard

_GUARD = StoreGuard(
    "postgres",
    (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.OperatorInterventionError,
    ),
)

_TABLES = {
    "sessions": """
        CREATE {unlogged} TABLE IF NOT EXISTS sessions (
            id text PRIMARY KEY,
            user_id integer NOT NULL,
            created_at double precision NOT NULL,
            expires_at double precision NOT NULL
        );
        CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
        CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id);
    """,
    "jti_denylist": """
        CREATE {unlogged} TABLE IF NOT EXISTS jti_denylist (
            jti text PRIMARY KEY,
            expires_at double precision NOT NULL
        );
        CREATE INDEX IF NOT EXISTS jti_denylist_expires_at ON jti_denylist (expires_at);
    """,
    "refresh_families": """
        CREATE {unlogged} TABLE IF NOT EXISTS refresh_families (
            id text PRIMARY KEY,
            jti text NOT NULL,
            expires_at double precision NOT NULL
        );
        CREATE INDEX IF NOT EXISTS refresh_families_expires_at ON refresh_families (expires_at);
    """,
}


@asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """Yield a pool with bounded connect/command timeouts and every table created.

    Raises ConfigError when the server cannot be reached at start-up.
    """
    assert settings.database_url
    try:
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=1,
            max_size=settings.pool_size,
            timeout=settings.store_timeout,
            command_timeout=settings.store_timeout,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ConfigError(f"cannot reach PostgreSQL at {_redact(settings)}: {exc}") from None
    try:
        await _create_tables(pool, unlogged=settings.pg_unlogged)
        yield pool
    finally:
        await pool.close()


async def _create_tables(pool: asyncpg.Pool, *, unlogged: bool) -> None:
    async with pool.acquire() as conn:
        # Serialise concurrent start-ups (several workers): CREATE IF NOT EXISTS can race.
        await conn.execute("SELECT pg_advisory_lock(7714)")
        try:
            for table, ddl in _TABLES.items():
                await conn.execute(ddl.format(unlogged="UNLOGGED" if unlogged else ""))
                persistence = await conn.fetchval(
                    "SELECT relpersistence FROM pg_class WHERE relname = $1", table
                )
                if (persistence == "u") != unlogged:
                    mode = "UNLOGGED" if unlogged else "LOGGED"
                    await conn.execute(f"ALTER TABLE {table} SET {mode}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(7714)")


def _redact(settings: Settings) -> str:
    url = settings.database_url or ""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "…@" + rest.split("@", 1)[1]
    return scheme + sep + rest


async def purge_expired(pool: asyncpg.Pool, every: float) -> None:
    """Delete expired rows of every table each `every` seconds, until cancelled."""
    while True:
        await asyncio.sleep(every)
        now = time.time()
        try:
            for table in _TABLES:
                await pool.execute(f"DELETE FROM {table} WHERE expires_at <= $1", now)  # noqa: S608
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            continue  # the store is down; requests report it, the next round retries


class PostgresSessionStore:
    """One row per session; statements are prepared once per connection by asyncpg's cache."""

    kind = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def put(self, sid: str, record: SessionRecord) -> None:
        """Insert the row (ids are fresh, so never a conflict)."""
        with _GUARD:
            await self._pool.execute(
                "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1,$2,$3,$4)",
                sid,
                record.user_id,
                record.created,
                record.expires,
            )

    async def get(self, sid: str) -> SessionRecord | None:
        """Return the unexpired row, or None."""
        with _GUARD:
            row = await self._pool.fetchrow(
                "SELECT user_id, created_at, expires_at FROM sessions "
                "WHERE id = $1 AND expires_at > $2",
                sid,
                time.time(),
            )
        return SessionRecord(row[0], row[1], row[2]) if row else None

    async def touch(self, sid: str, record: SessionRecord) -> None:
        """Move the row's expiry, if the row still exists."""
        with _GUARD:
            await self._pool.execute(
                "UPDATE sessions SET expires_at = $2 WHERE id = $1", sid, record.expires
            )

    async def take(self, sid: str) -> SessionRecord | None:
        """DELETE … RETURNING: atomically remove and return the row."""
        with _GUARD:
            row = await self._pool.fetchrow(
                "DELETE FROM sessions WHERE id = $1 RETURNING user_id, created_at, expires_at",
                sid,
            )
        return SessionRecord(row[0], row[1], row[2]) if row else None

    async def ping(self) -> None:
        """Raise StoreUnavailable unless PostgreSQL answers."""
        with _GUARD:
            await self._pool.fetchval("SELECT 1")


class PostgresDenyList:
    """Denied `jti`s, one row each; expired rows are purged in the background."""

    kind = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, jti: str, expires: float) -> None:
        """Deny `jti` until `expires`."""
        with _GUARD:
            await self._pool.execute(
                "INSERT INTO jti_denylist (jti, expires_at) VALUES ($1, $2) "
                "ON CONFLICT (jti) DO NOTHING",
                jti,
                expires,
            )

    async def contains(self, jti: str) -> bool:
        """Return True if `jti` is denied."""
        with _GUARD:
            found = await self._pool.fetchval(
                "SELECT 1 FROM jti_denylist WHERE jti = $1 AND expires_at > $2", jti, time.time()
            )
        return found is not None

    async def ping(self) -> None:
        """Raise StoreUnavailable unless PostgreSQL answers."""
        with _GUARD:
            await self._pool.fetchval("SELECT 1")


class PostgresRefreshFamilies:
    """One row per family; rotation is a conditional UPDATE, so concurrent uses serialise."""

    kind = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def start(self, family: str, jti: str, expires: float) -> None:
        """Open the family with `jti` current."""
        with _GUARD:
            await self._pool.execute(
                "INSERT INTO refresh_families (id, jti, expires_at) VALUES ($1, $2, $3)",
                family,
                jti,
                expires,
            )

    async def rotate(self, family: str, old_jti: str, new_jti: str, expires: float) -> bool:
        """Return True if `old_jti` was current; on a replay delete the family."""
        with _GUARD:
            # The row lock makes a concurrent second UPDATE re-check `jti` after the first
            # commits, so one token rotates at most once.
            swapped = await self._pool.fetchval(
                "UPDATE refresh_families SET jti = $3, expires_at = $4 "
                "WHERE id = $1 AND jti = $2 AND expires_at > $5 RETURNING 1",
                family,
                old_jti,
                new_jti,
                expires,
                time.time(),
            )
            if swapped is None:
                await self._pool.execute("DELETE FROM refresh_families WHERE id = $1", family)
        return swapped is not None

    async def revoke(self, family: str) -> None:
        """Delete the family."""
        with _GUARD:
            await self._pool.execute("DELETE FROM refresh_families WHERE id = $1", family)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless PostgreSQL answers."""
        with _GUARD:
            await self._pool.fetchval("SELECT 1")
