"""Read-only looks into the real stores, to prove a request's side effect really happened."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiomcache
import asyncpg
from redis.asyncio import Redis

from servers.settings import Settings


class StoreProbe(Protocol):
    """Questions a verifier may ask one store, by the same keys the server uses."""

    async def has_session(self, sid: str) -> bool:
        """Return True if the session record exists."""

    async def is_denied(self, jti: str) -> bool:
        """Return True if the access-token id is on the denylist."""

    async def family_jti(self, family: str) -> str | None:
        """Return the refresh family's current token id, or None if it was revoked."""

    async def size(self) -> int:
        """Return how many records of any kind the store holds."""


class FileProbe:
    """Session files in the session directory."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    async def has_session(self, sid: str) -> bool:
        return (self._dir / f"sess_{sid}").exists()

    async def is_denied(self, jti: str) -> bool:
        return False

    async def family_jti(self, family: str) -> str | None:
        return None

    async def size(self) -> int:
        return sum(1 for name in os.listdir(self._dir) if name.startswith("sess_"))


class PostgresProbe:
    """The sessions, jti_denylist and refresh_families tables."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._c = conn

    async def has_session(self, sid: str) -> bool:
        return await self._c.fetchval("SELECT 1 FROM sessions WHERE id = $1", sid) is not None

    async def is_denied(self, jti: str) -> bool:
        found = await self._c.fetchval("SELECT 1 FROM jti_denylist WHERE jti = $1", jti)
        return found is not None

    async def family_jti(self, family: str) -> str | None:
        jti: str | None = await self._c.fetchval(
            "SELECT jti FROM refresh_families WHERE id = $1", family
        )
        return jti

    async def size(self) -> int:
        total = 0
        for table in ("sessions", "jti_denylist", "refresh_families"):
            with contextlib.suppress(asyncpg.UndefinedTableError):
                total += await self._c.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
        return total


class RedisProbe:
    """`sess:`, `deny:` and `fam:` keys."""

    def __init__(self, client: Redis) -> None:
        self._r = client

    async def has_session(self, sid: str) -> bool:
        return bool(await self._r.exists(f"sess:{sid}"))

    async def is_denied(self, jti: str) -> bool:
        return bool(await self._r.exists(f"deny:{jti}"))

    async def family_jti(self, family: str) -> str | None:
        value = await self._r.get(f"fam:{family}")
        return value.decode() if isinstance(value, bytes) else value

    async def size(self) -> int:
        return int(await self._r.dbsize())


class MemcachedProbe:
    """`sess:` keys; the size is memcached's `curr_items`."""

    def __init__(self, client: aiomcache.Client) -> None:
        self._mc = client

    async def has_session(self, sid: str) -> bool:
        return await self._mc.get(b"sess:" + sid.encode()) is not None

    async def is_denied(self, jti: str) -> bool:
        return False

    async def family_jti(self, family: str) -> str | None:
        return None

    async def size(self) -> int:
        stats = await self._mc.stats()
        return int(stats[b"curr_items"] or 0)


@dataclass(frozen=True)
class Probes:
    """The probe of each kind of state a configuration keeps (None where it keeps none)."""

    sessions: StoreProbe | None
    denylist: StoreProbe | None
    families: StoreProbe | None
    all: tuple[StoreProbe, ...]

    async def size(self) -> int:
        """Return the number of records across every store of the configuration."""
        return sum([await p.size() for p in self.all])


@asynccontextmanager
async def open_probes(settings: Settings) -> AsyncIterator[Probes]:
    """Yield probes onto the stores `settings` uses, connected directly (not through the server)."""
    async with AsyncExitStack() as stack:
        by_kind: dict[str, StoreProbe] = {}
        if settings.needs_postgres and settings.database_url:
            conn = await asyncpg.connect(settings.database_url)
            stack.push_async_callback(conn.close)
            by_kind["postgres"] = PostgresProbe(conn)
        if settings.needs_redis and settings.redis_url:
            client = Redis.from_url(settings.redis_url)
            stack.push_async_callback(client.aclose)
            by_kind["redis"] = RedisProbe(client)
        if settings.backend == "session-memcached" and settings.memcached_url:
            parts = urlsplit(settings.memcached_url)
            mc = aiomcache.Client(parts.hostname or "127.0.0.1", parts.port or 11211)
            stack.push_async_callback(mc.close)
            by_kind["memcached"] = MemcachedProbe(mc)
        if settings.backend == "session-file" and settings.session_dir:
            by_kind["file"] = FileProbe(settings.session_dir)
        session_kind = {
            "session-file": "file",
            "session-postgres": "postgres",
            "session-redis": "redis",
            "session-memcached": "memcached",
        }.get(settings.backend)
        yield Probes(
            sessions=by_kind.get(session_kind) if session_kind else None,
            denylist=by_kind.get(settings.denylist_store)
            if settings.backend == "jwt-denylist"
            else None,
            families=by_kind.get(settings.refresh_store) if settings.is_jwt else None,
            all=tuple(by_kind.values()),
        )
