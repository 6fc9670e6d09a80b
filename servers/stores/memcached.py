"""memcached: session records under keys with expiry (aiomcache)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import aiomcache

from servers.errors import ConfigError
from servers.settings import Settings
from servers.stores import SessionRecord, StoreGuard

_GUARD = StoreGuard("memcached", (OSError, TimeoutError, aiomcache.exceptions.ClientException))


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "memcached" or not parts.hostname:
        raise ConfigError(f"MEMCACHED_URL must look like memcached://host:port, not {url!r}")
    return parts.hostname, parts.port or 11211


@asynccontextmanager
async def open_client(settings: Settings) -> AsyncIterator[aiomcache.Client]:
    """Yield a client after one successful round trip; raises ConfigError if unreachable."""
    assert settings.memcached_url
    host, port = _address(settings.memcached_url)
    client = aiomcache.Client(host, port, pool_size=settings.pool_size, pool_minsize=1)
    try:
        try:
            async with asyncio.timeout(settings.store_timeout):
                await client.version()
        except (OSError, TimeoutError, aiomcache.exceptions.ClientException) as exc:
            raise ConfigError(f"cannot reach memcached at {host}:{port}: {exc!r}") from None
        yield client
    finally:
        await client.close()


def _ttl(record: SessionRecord) -> int:
    # memcached reads an exptime over 30 days as an absolute time, so stay relative.
    return max(1, min(int(record.expires - time.time()) + 1, 30 * 86400))


class MemcachedSessionStore:
    """Session records under `sess:<id>`; aiomcache has no timeouts of its own, so each call
    runs under `asyncio.timeout`."""

    kind = "memcached"

    def __init__(self, client: aiomcache.Client, timeout: float) -> None:
        self._mc = client
        self._timeout = timeout

    async def put(self, sid: str, record: SessionRecord) -> None:
        """Store the record expiring with the session."""
        with _GUARD:
            async with asyncio.timeout(self._timeout):
                await self._mc.set(b"sess:" + sid.encode(), record.encode(), exptime=_ttl(record))

    async def touch(self, sid: str, record: SessionRecord) -> None:
        """`replace`: renew only a session that still exists."""
        with _GUARD:
            async with asyncio.timeout(self._timeout):
                await self._mc.replace(
                    b"sess:" + sid.encode(), record.encode(), exptime=_ttl(record)
                )

    async def get(self, sid: str) -> SessionRecord | None:
        """Return the record, or None."""
        with _GUARD:
            async with asyncio.timeout(self._timeout):
                data = await self._mc.get(b"sess:" + sid.encode())
        return SessionRecord.decode(data) if data is not None else None

    async def take(self, sid: str) -> SessionRecord | None:
        """Read then delete; only the caller whose delete removed the key gets the record."""
        key = b"sess:" + sid.encode()
        with _GUARD:
            async with asyncio.timeout(self._timeout):
                data = await self._mc.get(key)
                if data is None or not await self._mc.delete(key):
                    return None
                return SessionRecord.decode(data)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless memcached answers `version`."""
        with _GUARD:
            async with asyncio.timeout(self._timeout):
                await self._mc.version()
