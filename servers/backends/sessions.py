"""Server-side sessions: a random id in a cookie, the record in one of four stores."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from servers.credentials import CSRF_HEADER, CookieSpec, Grant, csrf_token, read_cookie
from servers.credentials import require_csrf as _require_csrf
from servers.errors import SessionNotFound
from servers.settings import Settings
from servers.stores import SessionRecord, SessionStore
from servers.stores import memcached as mc_store
from servers.stores import postgres as pg_store
from servers.stores import redis as redis_store
from servers.stores.files import FileSessionStore
from servers.timing import ServerTiming
from servers.users import User, UserDirectory, UserView

COOKIE = "session_id"
# 32 bytes from `secrets`, base64url without padding: 256 bits, nothing else inside.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_PURGE_EVERY = 60.0


def new_session_id() -> str:
    """Return a fresh 256-bit session id."""
    return secrets.token_urlsafe(32)


class SessionBackend:
    """Login creates a record, each request reads it, logout deletes it, refresh rotates its id."""

    challenge = 'Cookie realm="authbench", cookie-name="session_id"'

    def __init__(self, settings: Settings, store: SessionStore, users: UserDirectory) -> None:
        self.name = settings.backend
        self._s = settings
        self._store = store
        self._users = users

    async def login(self, user: User, timing: ServerTiming) -> Grant:
        """Create a session for `user` under a new id (never one the client sent)."""
        now = time.time()
        record = SessionRecord(user_id=user.id, created=now, expires=self._expiry(now, now))
        return await self._open(record, timing)

    async def authenticate(self, request: web.Request, timing: ServerTiming) -> UserView:
        """Return the session's user; raises SessionNotFound (401) or StoreUnavailable."""
        sid = self._session_id(request)
        with timing.measure("store"):
            record = await self._store.get(sid)
        now = time.time()
        record = self._live(record, now)
        if self._s.sliding:
            renewed = SessionRecord(
                record.user_id, record.created, self._expiry(record.created, now)
            )
            with timing.measure("store"):
                await self._store.touch(sid, renewed)
        return self._user(record).view()

    async def logout(self, request: web.Request, timing: ServerTiming) -> Grant:
        """Delete the record and clear the cookie; raises SessionNotFound or CsrfFailed."""
        sid = self._session_id(request)
        self._require_csrf(request, sid)
        with timing.measure("store"):
            record = await self._store.take(sid)
        if record is None:
            raise SessionNotFound()
        return Grant(cookies=(CookieSpec(COOKIE, "", max_age=0),))

    async def refresh(self, request: web.Request, timing: ServerTiming) -> tuple[UserView, Grant]:
        """Move the session to a new id, keeping its absolute deadline; the old id dies."""
        sid = self._session_id(request)
        self._require_csrf(request, sid)
        with timing.measure("store"):
            record = await self._store.take(sid)
        now = time.time()
        record = self._live(record, now)
        user = self._user(record)
        renewed = SessionRecord(record.user_id, record.created, self._expiry(record.created, now))
        return user.view(), await self._open(renewed, timing)

    async def health(self) -> dict[str, object]:
        """Return the mechanism's properties; raises StoreUnavailable if the store is down."""
        await self._store.ping()
        return {"store": self._store.kind, "stateless": False, "sliding": self._s.sliding}

    def jwks(self) -> dict[str, object] | None:
        """Sessions publish no keys."""
        return None

    async def _open(self, record: SessionRecord, timing: ServerTiming) -> Grant:
        sid = new_session_id()
        with timing.measure("store"):
            await self._store.put(sid, record)
        token = csrf_token(self._s.csrf_secret, sid)
        return Grant(
            body={"csrf_token": token},
            cookies=(CookieSpec(COOKIE, sid),),
            headers={CSRF_HEADER: token},
        )

    def _expiry(self, created: float, now: float) -> float:
        return min(now + self._s.session_ttl, created + self._s.session_absolute_ttl)

    @staticmethod
    def _session_id(request: web.Request) -> str:
        sid = read_cookie(request, COOKIE)
        # Anything that is not exactly our format never reaches a store.
        if sid is None or not _SESSION_ID.fullmatch(sid):
            raise SessionNotFound()
        return sid

    def _require_csrf(self, request: web.Request, sid: str) -> None:
        _require_csrf(request, csrf_token(self._s.csrf_secret, sid))

    def _live(self, record: SessionRecord | None, now: float) -> SessionRecord:
        if (
            record is None
            or record.expires <= now
            or record.created + self._s.session_absolute_ttl <= now
        ):
            raise SessionNotFound()
        return record

    def _user(self, record: SessionRecord) -> User:
        user = self._users.get(record.user_id)
        if user is None:
            raise SessionNotFound()
        return user


@asynccontextmanager
async def open_file(settings: Settings, users: UserDirectory) -> AsyncIterator[SessionBackend]:
    """Yield the file-session backend, purging expired files in the background."""
    assert settings.session_dir is not None
    store = FileSessionStore(settings.session_dir)
    purge = asyncio.create_task(store.purge_forever(_PURGE_EVERY))
    try:
        yield SessionBackend(settings, store, users)
    finally:
        purge.cancel()


@asynccontextmanager
async def open_postgres(settings: Settings, users: UserDirectory) -> AsyncIterator[SessionBackend]:
    """Yield the PostgreSQL-session backend over an asyncpg pool."""
    async with pg_store.open_pool(settings) as pool:
        purge = asyncio.create_task(pg_store.purge_expired(pool, _PURGE_EVERY))
        try:
            yield SessionBackend(settings, pg_store.PostgresSessionStore(pool), users)
        finally:
            purge.cancel()


@asynccontextmanager
async def open_redis(settings: Settings, users: UserDirectory) -> AsyncIterator[SessionBackend]:
    """Yield the Redis-session backend."""
    async with redis_store.open_client(settings) as client:
        yield SessionBackend(settings, redis_store.RedisSessionStore(client), users)


@asynccontextmanager
async def open_memcached(settings: Settings, users: UserDirectory) -> AsyncIterator[SessionBackend]:
    """Yield the memcached-session backend."""
    async with mc_store.open_client(settings) as client:
        store = mc_store.MemcachedSessionStore(client, settings.store_timeout)
        yield SessionBackend(settings, store, users)
