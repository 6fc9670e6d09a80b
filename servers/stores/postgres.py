"""PostgreSQL: the `sessions` table, the denylist and refresh families (asyncpg pool)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import asyncpg

from servers.errors import ConfigError
from servers.settings import Settings
from servers.stores import SessionRecord, StoreGuard, one_line

_GUARD = StoreGuard(
    "postgres",
    (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        # 57P01 admin shutdown, 57P03 "the database system is starting up": a restart.
        asyncpg.exceptions.OperatorInterventionError,
        # 53xxx too many connections, out of memory or disk: up, but unable to serve now.
        asyncpg.exceptions.InsufficientResourcesError,
        # A server that hangs up sends a FATAL notice before its EOF; a query sent between the
        # two fails with this ("cannot switch to state …") instead of a connection error.
        asyncpg.exceptions.InternalClientError,
    ),
)
# Everything that means PostgreSQL, or the DSN, failed us: at start-up and in the purge.
_STORE_FAILURES = (
    OSError,
    TimeoutError,
    ValueError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
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


class BoundedPool:
    """An asyncpg pool whose every call, waiting for a free connection included, ends within
    `timeout` seconds; a call cut short closes its connection instead of returning it."""

    __slots__ = ("_pool", "_timeout")

    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    async def execute(self, query: str, *args: object) -> str:
        """Run `query` and return its status tag; raises TimeoutError or asyncpg's errors."""
        status: str = await self._run("execute", query, args)
        return status

    async def fetchrow(self, query: str, *args: object) -> Any:
        """Return the first row of `query` (an asyncpg Record) or None; raises as `execute`."""
        return await self._run("fetchrow", query, args)

    async def fetchval(self, query: str, *args: object) -> Any:
        """Return the first column of the first row, or None; raises as `execute`."""
        return await self._run("fetchval", query, args)

    async def _run(
        self,
        method: Literal["execute", "fetchrow", "fetchval"],
        query: str,
        args: tuple[object, ...],
    ) -> Any:
        # asyncpg bounds connecting and each query, but not the wait for a free connection, nor
        # the release of a timed-out one, which waits for a CancelRequest round trip (a second
        # command_timeout against a frozen server). One deadline over the whole call is cheaper
        # than acquire(timeout=), which wraps every acquire in a task on Python < 3.12.
        async with asyncio.timeout(self._timeout), self._pool.acquire() as con:
            try:
                return await getattr(con, method)(query, *args)
            except (TimeoutError, asyncio.CancelledError):
                # The query may still be running or its reply still due: never reuse this one.
                con.terminate()
                raise


@asynccontextmanager
async def open_pool(settings: Settings) -> AsyncIterator[BoundedPool]:
    """Yield a bounded pool (`settings.store_timeout` per call) with every table created.

    Raises ConfigError when the server cannot be reached, or the DSN used, at start-up.
    """
    assert settings.database_url
    pool = await _connect(settings)
    try:
        yield BoundedPool(pool, settings.store_timeout)
    finally:
        try:
            # A graceful close waits for each connection's goodbye; a frozen server never sends it.
            async with asyncio.timeout(settings.store_timeout):
                await pool.close()
        except TimeoutError:
            pool.terminate()


async def _connect(settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url,
        # No floor: asyncpg re-dials a lost floor connection in the background and logs a
        # traceback per attempt throughout an outage; requests reconnect on demand instead.
        # So nothing is dialled here: the first connection (and a bad DSN) comes with the DDL.
        min_size=0,
        max_size=settings.pool_size,
        timeout=settings.store_timeout,
        command_timeout=settings.store_timeout,
        reset=_keep_session,
    )
    try:
        await _create_tables(pool, unlogged=settings.pg_unlogged)
    except _STORE_FAILURES as exc:
        pool.terminate()
        where = _redact(settings)
        raise ConfigError(f"cannot reach PostgreSQL at {where}: {one_line(exc)}") from None
    return pool


async def _keep_session(con: asyncpg.Connection) -> None:
    # Pool reset hook. asyncpg's default sends "RESET ALL; UNLISTEN *; …" on every release, a
    # second round trip per request, holding the response. The stores leave no session state
    # behind (open transactions are still rolled back by the pool), so there is nothing to reset.
    return None


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


async def purge_expired(pool: BoundedPool, every: float) -> None:
    """Delete expired rows of every table each `every` seconds, until cancelled."""
    while True:
        await asyncio.sleep(every)
        now = time.time()
        try:
            for table in _TABLES:
                await pool.execute(f"DELETE FROM {table} WHERE expires_at <= $1", now)  # noqa: S608
        except _STORE_FAILURES:
            continue  # the store is down; requests report it, the next round retries


class PostgresSessionStore:
    """One row per session; statements are prepared once per connection by asyncpg's cache."""

    kind = "postgres"

    def __init__(self, pool: BoundedPool) -> None:
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

    def __init__(self, pool: BoundedPool) -> None:
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

    def __init__(self, pool: BoundedPool) -> None:
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
