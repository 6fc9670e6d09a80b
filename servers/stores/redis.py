"""Redis: session keys with TTL, the `jti` denylist and refresh families (redis-py asyncio)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from servers.errors import ConfigError
from servers.settings import Settings
from servers.stores import SessionRecord, StoreGuard, one_line

_GUARD = StoreGuard(
    "redis", (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError, RedisError)
)

# Compare-and-swap of a family's current refresh jti. A mismatch on a live family is a
# replayed token: the family is deleted, so every token descending from it dies.
_ROTATE = """
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""


@asynccontextmanager
async def open_client(settings: Settings) -> AsyncIterator[Redis]:
    """Yield a connected client with bounded timeouts; raises ConfigError if unreachable."""
    assert settings.redis_url
    try:
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.pool_size,
            # Bounds the wait for a free connection; connect and each command are bounded below.
            timeout=settings.store_timeout,
            socket_timeout=settings.store_timeout,
            socket_connect_timeout=settings.store_timeout,
            # No retries: a retried GETDEL or rotation script whose first reply was lost would
            # answer "gone" (401, or a revoked family) for a credential that was fine. A dead
            # pooled connection is replaced when it is next taken from the pool, not retried.
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise ConfigError(
            f"invalid Redis URL {_redact(settings.redis_url)}: {one_line(exc)}"
        ) from None
    client = Redis(connection_pool=pool)
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"cannot reach Redis at {_redact(settings.redis_url)}: {one_line(exc)}"
            ) from None
        yield client
    finally:
        await client.aclose()
        await pool.aclose()


def _redact(url: str) -> str:
    # Start-up errors go to logs; a password in the URL must not.
    scheme, sep, rest = url.partition("://")
    return scheme + sep + ("…@" + rest.rpartition("@")[2] if "@" in rest else rest)


def _decode(data: bytes | str | None) -> SessionRecord | None:
    if data is None:
        return None
    return SessionRecord.decode(data.encode() if isinstance(data, str) else data)


def _ttl_ms(expires: float) -> int:
    return max(1, int((expires - time.time()) * 1000))


class RedisSessionStore:
    """Session records under `sess:<id>`, expiring with the session."""

    kind = "redis"

    def __init__(self, client: Redis) -> None:
        self._r = client

    async def put(self, sid: str, record: SessionRecord) -> None:
        """Store the record with a TTL ending at its expiry."""
        with _GUARD:
            await self._r.set(f"sess:{sid}", record.encode(), px=_ttl_ms(record.expires))

    async def get(self, sid: str) -> SessionRecord | None:
        """Return the record, or None."""
        with _GUARD:
            data = await self._r.get(f"sess:{sid}")
        return _decode(data)

    async def touch(self, sid: str, record: SessionRecord) -> None:
        """SET … XX: renew only a session that still exists."""
        with _GUARD:
            await self._r.set(f"sess:{sid}", record.encode(), px=_ttl_ms(record.expires), xx=True)

    async def take(self, sid: str) -> SessionRecord | None:
        """GETDEL: atomically remove and return the record."""
        with _GUARD:
            data = await self._r.getdel(f"sess:{sid}")
        return _decode(data)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers PING."""
        with _GUARD:
            await self._r.ping()


class RedisDenyList:
    """Denied `jti`s under `deny:<jti>` with TTL = the token's remaining lifetime."""

    kind = "redis"

    def __init__(self, client: Redis) -> None:
        self._r = client

    async def add(self, jti: str, expires: float) -> None:
        """Deny `jti` until `expires`."""
        with _GUARD:
            await self._r.set(f"deny:{jti}", b"1", px=_ttl_ms(expires))

    async def contains(self, jti: str) -> bool:
        """Return True if `jti` is denied."""
        with _GUARD:
            found = await self._r.exists(f"deny:{jti}")
        return bool(found)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers PING."""
        with _GUARD:
            await self._r.ping()


class RedisRefreshFamilies:
    """`fam:<id>` holds the family's current refresh `jti`; rotation is one Lua CAS."""

    kind = "redis"

    def __init__(self, client: Redis) -> None:
        self._r = client
        self._rotate = client.register_script(_ROTATE)

    async def start(self, family: str, jti: str, expires: float) -> None:
        """Open the family with `jti` current."""
        with _GUARD:
            await self._r.set(f"fam:{family}", jti, px=_ttl_ms(expires))

    async def rotate(self, family: str, old_jti: str, new_jti: str, expires: float) -> bool:
        """Return True if `old_jti` was current and is now replaced by `new_jti`."""
        with _GUARD:
            result = await self._rotate(
                keys=[f"fam:{family}"], args=[old_jti, new_jti, _ttl_ms(expires)]
            )
        return bool(result == 1)

    async def revoke(self, family: str) -> None:
        """Delete the family."""
        with _GUARD:
            await self._r.delete(f"fam:{family}")

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers PING."""
        with _GUARD:
            await self._r.ping()
