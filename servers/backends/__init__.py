"""The `Backend` protocol and the registry of every mechanism authbench measures."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from aiohttp import web

from servers.backends import sessions, tokens
from servers.credentials import Grant
from servers.settings import Settings
from servers.timing import ServerTiming
from servers.users import User, UserDirectory, UserView


class Backend(Protocol):
    """One authentication mechanism. Handlers call only these; none knows which it serves."""

    name: str
    challenge: str
    """`WWW-Authenticate` value sent with every 401."""

    async def login(self, user: User, timing: ServerTiming) -> Grant:
        """Return a fresh credential for an already-verified user."""

    async def authenticate(self, request: web.Request, timing: ServerTiming) -> UserView:
        """Return the user the request's credential belongs to; raises Unauthenticated."""

    async def logout(self, request: web.Request, timing: ServerTiming) -> Grant:
        """End the credential wherever the mechanism allows; raises Unauthenticated/CsrfFailed."""

    async def refresh(self, request: web.Request, timing: ServerTiming) -> tuple[UserView, Grant]:
        """Exchange the credential for a new one; raises Unauthenticated/InvalidGrant/CsrfFailed."""

    async def health(self) -> dict[str, object]:
        """Return the mechanism's properties; raises StoreUnavailable if its store is down."""

    def jwks(self) -> dict[str, object] | None:
        """Return the public JWK Set, or None when the mechanism publishes no keys."""


BackendFactory = Callable[[Settings, UserDirectory], AbstractAsyncContextManager[Backend]]

BACKENDS: dict[str, BackendFactory] = {
    "session-file": sessions.open_file,
    "session-postgres": sessions.open_postgres,
    "session-redis": sessions.open_redis,
    "session-memcached": sessions.open_memcached,
    "jwt": tokens.open_stateless,
    "jwt-denylist": tokens.open_denylist,
}
