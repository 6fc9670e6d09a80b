"""memcached: session records under keys with expiry (aiomcache)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import urlsplit

import aiomcache
from aiomcache.pool import Connection

from servers.errors import ConfigError
from servers.settings import Settings
from servers.stores import SessionRecord, StoreGuard, one_line

# EOFError: asyncio's IncompleteReadError, a reply cut short by the server hanging up.
_GUARD = StoreGuard(
    "memcached", (OSError, TimeoutError, EOFError, aiomcache.exceptions.ClientException)
)
T = TypeVar("T")


def _address(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 11211
    except ValueError:  # an unclosed "[", a port that is not a number in range
        host = None
    if not url.startswith("memcached://") or not host:
        raise ConfigError(f"MEMCACHED_URL must look like memcached://host:port, not {url!r}")
    return host, port


class _Client(aiomcache.Client):
    """aiomcache's client, except that a reply cut short by the server hanging up raises."""

    async def _execute_simple_command(self, conn: Connection, raw_command: bytes) -> bytes:
        # aiomcache 0.8.2 calls readline() until a line ends in CRLF, but at EOF readline()
        # returns b"" without yielding, so a server gone mid-command froze the whole event loop.
        # Raising here also makes aiomcache close the connection instead of pooling it.
        conn.writer.write(raw_command)
        await conn.writer.drain()
        line = await conn.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionResetError("memcached closed the connection mid-reply")
        return line[:-2]


@asynccontextmanager
async def open_client(settings: Settings) -> AsyncIterator[aiomcache.Client]:
    """Yield a client after one successful round trip; raises ConfigError if unreachable."""
    assert settings.memcached_url
    host, port = _address(settings.memcached_url)
    client = _Client(host, port, pool_size=settings.pool_size, pool_minsize=1)
    try:
        try:
            async with asyncio.timeout(settings.store_timeout):
                await client.version()
        except (OSError, TimeoutError, EOFError, aiomcache.exceptions.ClientException) as exc:
            raise ConfigError(f"cannot reach memcached at {host}:{port}: {one_line(exc)}") from None
        yield client
    finally:
        await client.close()


def _ttl(record: SessionRecord) -> int:
    # memcached reads an exptime over 30 days as an absolute time, so stay relative; its
    # clock ticks in whole seconds, so round up and add one (the server checks `expires`).
    return max(1, min(math.ceil(record.expires - time.time()) + 1, 30 * 86400))


class MemcachedSessionStore:
    """Session records under `sess:<id>`; aiomcache has no timeouts of its own, so each call
    runs under `asyncio.timeout`."""

    kind = "memcached"

    def __init__(self, client: aiomcache.Client, timeout: float) -> None:
        self._mc = client
        self._timeout = timeout

    async def put(self, sid: str, record: SessionRecord) -> None:
        """Store the record expiring with the session; raises StoreUnavailable."""
        key = b"sess:" + sid.encode()
        await self._bounded(self._mc.set(key, record.encode(), exptime=_ttl(record)))

    async def touch(self, sid: str, record: SessionRecord) -> None:
        """`replace`: renew only a session that still exists; raises StoreUnavailable."""
        key = b"sess:" + sid.encode()
        await self._bounded(self._mc.replace(key, record.encode(), exptime=_ttl(record)))

    async def get(self, sid: str) -> SessionRecord | None:
        """Return the record, or None; raises StoreUnavailable."""
        data = await self._bounded(self._mc.get(b"sess:" + sid.encode()))
        return SessionRecord.decode(data) if data is not None else None

    async def take(self, sid: str) -> SessionRecord | None:
        """Read then delete; only the caller whose delete removed the key gets the record."""
        data = await self._bounded(self._get_and_delete(b"sess:" + sid.encode()))
        return SessionRecord.decode(data) if data is not None else None

    async def ping(self) -> None:
        """Raise StoreUnavailable unless memcached answers `version`."""
        await self._bounded(self._mc.version())

    async def _get_and_delete(self, key: bytes) -> bytes | None:
        data = await self._mc.get(key)
        if data is None or not await self._mc.delete(key):
            return None
        return data

    async def _bounded(self, call: Awaitable[T]) -> T:
        """Return what `call` returns, within the store timeout; raises StoreUnavailable."""
        with _GUARD:
            try:
                async with asyncio.timeout(self._timeout):
                    return await call
            except TimeoutError:
                # aiomcache pools a connection cancelled mid-command as if it were clean, with
                # the reply still due: the next command on it would read that reply as its own.
                # Drop the idle connections (the cancelled one is among them; nothing ran since).
                await self._mc.close()
                raise
