"""JWT access tokens (stateless, or checked against a `jti` denylist) with rotating refresh."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import jwt
from aiohttp import web

from servers.credentials import (
    CSRF_HEADER,
    CookieSpec,
    Grant,
    read_bearer,
    read_cookie,
    read_json,
    require_csrf,
)
from servers.errors import InvalidGrant, MalformedRequest, TokenInvalid, TokenRevoked
from servers.keyring import KeyRing
from servers.settings import Settings, StateStore
from servers.stores import DenyList, RefreshFamilies
from servers.stores import postgres as pg_store
from servers.stores import redis as redis_store
from servers.timing import ServerTiming
from servers.users import User, UserDirectory, UserView

ACCESS_TYPE = "at+jwt"  # RFC 9068
REFRESH_TYPE = "rt+jwt"
ACCESS_COOKIE = "access_token"
REFRESH_COOKIE = "refresh_token"
MAX_TOKEN_BYTES = 16 * 1024
_REQUIRED = ["exp", "iat", "sub", "jti", "iss", "aud"]
# Header members the server never acts on; a token naming one as critical is refused.
_FORBIDDEN_HEADERS = frozenset({"crit", "b64"})
# A NumericDate must be a number I-JSON carries exactly (RFC 7493 §2.2): 1e300 or a
# 400-digit integer is not a date, it is "never expires".
_MAX_NUMERIC_DATE = 2**53


def extra_claims(count: int) -> dict[str, str]:
    """Return `count` filler claims shaped like fine-grained permissions."""
    return {f"perm_{i:03d}": f"resource-{i:03d}:read,write" for i in range(count)}


class TokenCodec:
    """Signs and verifies one kind of token (access or refresh) against the key ring."""

    def __init__(self, settings: Settings, keyring: KeyRing, token_type: str) -> None:
        self._s = settings
        self._ring = keyring
        self._type = token_type
        # One PyJWT instance with its options set once, rather than merged on every call.
        self._jwt = jwt.PyJWT(options={"require": _REQUIRED, "verify_signature": True})

    def encode(self, claims: dict[str, object]) -> str:
        """Return `claims` signed by the current key, typed in the JOSE header."""
        key = self._ring.current
        return jwt.encode(
            claims, key.signing, algorithm=key.alg, headers={"kid": key.kid, "typ": self._type}
        )

    def decode(self, token: str) -> dict[str, Any]:
        """Return the verified claims; raises ValueError for anything short of a valid token."""
        if len(token) > MAX_TOKEN_BYTES:
            raise ValueError("token too long")
        segment = token.partition(".")[0]
        key = self._ring.key_for_header(segment) or self._ring.lookup(_unverified_kid(segment))
        if key is None:
            raise ValueError("unknown key")
        decoded = self._jwt.decode_complete(
            token,
            key.verifying,
            algorithms=[key.alg],
            audience=self._s.audience,
            issuer=self._s.issuer,
            leeway=self._s.leeway,
        )
        # The checks that matter run on the header PyJWT verified, not on our quick parse.
        header: dict[str, Any] = decoded["header"]
        if _FORBIDDEN_HEADERS.intersection(header) or header.get("typ") != self._type:
            raise ValueError("unexpected header")
        if header.get("kid") != key.kid or header.get("alg") != key.alg:
            raise ValueError("unknown key")
        claims: dict[str, Any] = decoded["payload"]
        _check_claim_types(claims)
        self._ring.remember_header(segment, key)
        return claims


def _unverified_kid(segment: str) -> object:
    """Return the `kid` of a token's header segment, parsed only to pick a key.

    `jwt.get_unverified_header` decodes every segment, signature included; this reads the
    header alone, which is all key selection needs. Raises ValueError if it is not JSON.
    """
    header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header.get("kid")


def _check_claim_types(claims: dict[str, Any]) -> None:
    # PyJWT coerces time claims with int(), which accepts "123" and True; the RFC wants numbers.
    for name in ("exp", "iat"):
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} is not a number")
        if not 0 <= value <= _MAX_NUMERIC_DATE:  # also false for NaN
            raise ValueError(f"{name} is out of range")
    for name in ("sub", "jti", "fam"):
        if not isinstance(claims.get(name), str):
            raise ValueError(f"{name} is not a string")


class TokenBackend:
    """Access tokens verified by signature alone, or also against a denylist of `jti`s."""

    def __init__(
        self,
        settings: Settings,
        keyring: KeyRing,
        families: RefreshFamilies | None,
        denylist: DenyList | None,
    ) -> None:
        self.name = settings.backend
        self._s = settings
        self._ring = keyring
        self._families = families
        self._denylist = denylist
        self._access = TokenCodec(settings, keyring, ACCESS_TYPE)
        self._refresh = TokenCodec(settings, keyring, REFRESH_TYPE)
        self._cookies = settings.transport == "cookie"
        self._extra = extra_claims(settings.extra_claims)
        self.challenge = (
            'Cookie realm="authbench", cookie-name="access_token"'
            if self._cookies
            else 'Bearer realm="authbench"'
        )

    async def login(self, user: User, timing: ServerTiming) -> Grant:
        """Open a refresh family and issue its first token pair."""
        return await self._issue(user.view(), secrets.token_urlsafe(16), None, timing)

    async def authenticate(self, request: web.Request, timing: ServerTiming) -> UserView:
        """Return the token's user; raises TokenInvalid, TokenRevoked or StoreUnavailable."""
        claims = await self._verified_access(request, timing)
        return {"id": int(claims["sub"]), "username": claims["name"], "role": claims["role"]}

    async def logout(self, request: web.Request, timing: ServerTiming) -> Grant:
        """Deny the access token (denylist) and end its refresh family (refresh store)."""
        claims = await self._verified_access(request, timing)
        if self._cookies:
            require_csrf(request, claims["csrf"])
        with timing.measure("store"):
            if self._denylist is not None:
                await self._denylist.add(claims["jti"], float(claims["exp"]))
            if self._families is not None:
                await self._families.revoke(claims["fam"])
        if not self._cookies:
            return Grant()
        return Grant(
            cookies=(
                CookieSpec(ACCESS_COOKIE, "", max_age=0),
                CookieSpec(REFRESH_COOKIE, "", path="/refresh", max_age=0),
            )
        )

    async def refresh(self, request: web.Request, timing: ServerTiming) -> tuple[UserView, Grant]:
        """Spend a refresh token for a new pair; a replay revokes its family (invalid_grant)."""
        token = await self._refresh_token(request)
        try:
            claims = self._refresh.decode(token)
            user_id = int(claims["sub"])
        except Exception:
            raise InvalidGrant() from None
        if self._cookies:
            require_csrf(request, str(claims.get("csrf", "")))
        user = self._users_view(user_id, claims)
        return user, await self._issue(user, claims["fam"], claims["jti"], timing)

    async def health(self) -> dict[str, object]:
        """Return the mechanism's properties; raises StoreUnavailable if a store is down."""
        for store in (self._families, self._denylist):
            if store is not None:
                await store.ping()
        return {
            "alg": self._ring.alg,
            "transport": self._s.transport,
            "stateless": self._denylist is None,
            "denylist": self._denylist.kind if self._denylist else None,
            "refresh_store": self._families.kind if self._families else "none",
            "refresh_reuse_detection": self._families is not None,
        }

    def jwks(self) -> dict[str, object] | None:
        """Return the public keys, or None for HMAC."""
        return self._ring.jwks()

    async def _verified_access(self, request: web.Request, timing: ServerTiming) -> dict[str, Any]:
        token = read_cookie(request, ACCESS_COOKIE) if self._cookies else read_bearer(request)
        if token is None:
            raise TokenInvalid("an access token is required")
        try:
            claims = self._access.decode(token)
            if not isinstance(claims.get("name"), str) or not isinstance(claims.get("role"), str):
                raise ValueError("missing profile claims")
            int(claims["sub"])
        except Exception:
            # Every failure to verify untrusted input, whatever PyJWT raised, is a 401.
            raise TokenInvalid() from None
        if self._denylist is not None:
            with timing.measure("store"):
                revoked = await self._denylist.contains(claims["jti"])
            if revoked:
                raise TokenRevoked()
        return claims

    async def _refresh_token(self, request: web.Request) -> str:
        if self._cookies:
            token = read_cookie(request, REFRESH_COOKIE)
        else:
            body = await read_json(request)
            token = body.get("refresh_token")
            if not isinstance(token, str):
                raise MalformedRequest("refresh_token must be a string")
        if not token:
            raise InvalidGrant()
        return token

    def _users_view(self, user_id: int, claims: dict[str, Any]) -> UserView:
        name, role = claims.get("name"), claims.get("role")
        if not isinstance(name, str) or not isinstance(role, str):
            raise InvalidGrant()
        return {"id": user_id, "username": name, "role": role}

    async def _issue(
        self, user: UserView, family: str, spent_jti: str | None, timing: ServerTiming
    ) -> Grant:
        now = int(time.time())
        access_exp = now + int(self._s.access_ttl)
        refresh_exp = now + int(self._s.refresh_ttl)
        refresh_jti = secrets.token_urlsafe(16)
        if self._families is not None:
            with timing.measure("store"):
                if spent_jti is None:
                    await self._families.start(family, refresh_jti, refresh_exp)
                elif not await self._families.rotate(family, spent_jti, refresh_jti, refresh_exp):
                    raise InvalidGrant()
        common = {"iss": self._s.issuer, "aud": self._s.audience, "sub": str(user["id"])}
        profile = {"name": user["username"], "role": user["role"], "fam": family}
        csrf = {"csrf": secrets.token_urlsafe(24)} if self._cookies else {}
        access = self._access.encode(
            {
                **common,
                "iat": now,
                "exp": access_exp,
                "jti": secrets.token_urlsafe(16),
                **profile,
                **csrf,
                **self._extra,
            }
        )
        refresh = self._refresh.encode(
            {**common, "iat": now, "exp": refresh_exp, "jti": refresh_jti, **profile, **csrf}
        )
        expires_in = int(self._s.access_ttl)
        if not self._cookies:
            body: dict[str, object] = {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "refresh_token": refresh,
            }
            return Grant(body=body)
        return Grant(
            body={"token_type": "cookie", "expires_in": expires_in, "csrf_token": csrf["csrf"]},
            cookies=(
                CookieSpec(ACCESS_COOKIE, access, max_age=expires_in),
                CookieSpec(
                    REFRESH_COOKIE, refresh, path="/refresh", max_age=int(self._s.refresh_ttl)
                ),
            ),
            headers={CSRF_HEADER: csrf["csrf"]},
        )


@asynccontextmanager
async def _open(
    settings: Settings, denylist_store: StateStore | None
) -> AsyncIterator[TokenBackend]:
    # One Redis client and one Postgres pool at most, shared by both kinds of state.
    wanted = {settings.refresh_store, denylist_store} - {"none", None}
    async with AsyncExitStack() as stack:
        client = None
        pool = None
        if "redis" in wanted:
            client = await stack.enter_async_context(redis_store.open_client(settings))
        if "postgres" in wanted:
            pool = await stack.enter_async_context(pg_store.open_pool(settings))
            purge = asyncio.create_task(pg_store.purge_expired(pool, 60.0))
            stack.callback(purge.cancel)
        families: RefreshFamilies | None = None
        if settings.refresh_store == "redis" and client is not None:
            families = redis_store.RedisRefreshFamilies(client)
        elif settings.refresh_store == "postgres" and pool is not None:
            families = pg_store.PostgresRefreshFamilies(pool)
        denylist: DenyList | None = None
        if denylist_store == "redis" and client is not None:
            denylist = redis_store.RedisDenyList(client)
        elif denylist_store == "postgres" and pool is not None:
            denylist = pg_store.PostgresDenyList(pool)
        yield TokenBackend(settings, KeyRing.from_settings(settings), families, denylist)


def open_stateless(
    settings: Settings, users: UserDirectory
) -> AbstractAsyncContextManager[TokenBackend]:
    """Return the `jwt` backend's context: nothing on the server is read on the request path."""
    return _open(settings, None)


def open_denylist(
    settings: Settings, users: UserDirectory
) -> AbstractAsyncContextManager[TokenBackend]:
    """Return the `jwt-denylist` backend's context: each request also asks the denylist."""
    return _open(settings, settings.denylist_store)
