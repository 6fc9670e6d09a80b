"""The security suite's arena: a served configuration, its store probes and a logged-in victim.

Every attack ends in `assert_refused`: the expected 4xx, no credential handed out, the stores
exactly as large as before, and the victim's real credential still working afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from loadtests.client import AuthClient, Credential, Reply
from loadtests.probes import Probes, open_probes
from servers.credentials import csrf_token
from servers.keyring import KeyRing, SigningKey, generate_key_material
from servers.settings import Settings
from tests.conftest import CONFIG_FIELDS, CONFIG_IDS, ServeFn


def configs(wanted: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Return the ids of `CONFIGS` whose Settings fields satisfy `wanted`."""
    return [c for c in CONFIG_IDS if wanted(CONFIG_FIELDS[c])]


def _is_jwt(f: dict[str, Any]) -> bool:
    return str(f["backend"]).startswith("jwt")


JWT_CONFIGS = configs(_is_jwt)
SESSION_CONFIGS = configs(lambda f: not _is_jwt(f))
COOKIE_CONFIGS = configs(lambda f: not _is_jwt(f) or f.get("transport") == "cookie")
BEARER_CONFIGS = configs(lambda f: _is_jwt(f) and f.get("transport", "bearer") == "bearer")
ASYMMETRIC_CONFIGS = configs(lambda f: _is_jwt(f) and f.get("alg", "HS256") != "HS256")
DENYLIST_CONFIGS = configs(lambda f: f["backend"] == "jwt-denylist")
STATEFUL_REFRESH_CONFIGS = configs(lambda f: _is_jwt(f) and f.get("refresh_store") != "none")
# One configuration per session store (the sliding variant is the Redis store again).
SESSION_STORE_CONFIGS = ["session-file", "session-postgres", "session-redis", "session-memcached"]

CREDENTIAL_FIELDS = ("access_token", "refresh_token", "csrf_token")


@functools.cache
def key_material(alg: str) -> bytes:
    """Return signing material for `alg`, made once per run (RSA generation is slow)."""
    return generate_key_material(alg)


@dataclass
class Arena:
    """One served configuration with a victim logged in before any attack."""

    config: str
    settings: Settings
    client: AuthClient
    probes: Probes
    victim: Credential
    key: SigningKey | None
    """The JWT signing key the test knows (None for sessions)."""

    @property
    def cookies(self) -> bool:
        """True when the credential travels in cookies (and unsafe methods need CSRF)."""
        return self.settings.uses_cookies

    async def login(self, i: int) -> Credential:
        """Log in as user{i}; fails the test unless it works."""
        reply, cred = await self.client.login(f"user{i}", f"secret-{i}")
        assert reply.status == 200 and cred is not None, f"login user{i}: {reply.status}"
        return cred

    def access_headers(self, token: str) -> dict[str, str]:
        """Return headers presenting `token` as the access token, the way this transport does."""
        if self.settings.transport == "cookie":
            return {"Cookie": f"access_token={token}"}
        return {"Authorization": f"Bearer {token}"}

    async def me_with(self, token: str) -> Reply:
        """GET /me presenting `token` as the access token."""
        return await self.client.request("GET", "/me", headers=self.access_headers(token))

    async def refresh_with(self, token: str, csrf: str = "csrf") -> Reply:
        """POST /refresh presenting `token` as the refresh token (with `csrf` on cookies)."""
        if self.settings.transport == "cookie":
            headers = {"Cookie": f"refresh_token={token}", "X-CSRF-Token": csrf}
            return await self.client.request("POST", "/refresh", headers=headers)
        return await self.client.request("POST", "/refresh", json_body={"refresh_token": token})

    def session_headers(self, sid: str, *, csrf: bool = True) -> dict[str, str]:
        """Return a session cookie for `sid` and, with `csrf`, its valid CSRF token.

        The test knows the CSRF secret, so only the id's own check can stop the request.
        """
        headers = {"Cookie": f"session_id={sid}"}
        if csrf:
            headers["X-CSRF-Token"] = csrf_token(self.settings.csrf_secret, sid)
        return headers


ArenaFactory = Callable[..., Awaitable[Arena]]


@pytest.fixture
async def open_arena(
    make_settings: Callable[..., Settings], serve: ServeFn, http: aiohttp.ClientSession
) -> AsyncIterator[ArenaFactory]:
    """Return `build(config, **settings_overrides) -> Arena`; user1 is the victim.

    JWT configurations sign with key material the test knows, so it can forge tokens that
    are validly signed but wrong in exactly one way.
    """
    async with AsyncExitStack() as stack:

        async def build(config: str, **overrides: Any) -> Arena:
            fields = {**CONFIG_FIELDS[config], **overrides}
            if _is_jwt(fields):
                alg = fields.get("alg", "HS256")
                name = "jwt_secret" if alg == "HS256" else "jwt_private_key"
                fields.setdefault(name, key_material(alg))
            settings = make_settings(**fields)
            client = AuthClient(http, await serve(settings))
            probes = await stack.enter_async_context(open_probes(settings))
            key = KeyRing.from_settings(settings).current if settings.is_jwt else None
            reply, victim = await client.login("user1", "secret-1")
            assert reply.status == 200 and victim is not None, reply.body
            return Arena(config, settings, client, probes, victim, key)

        yield build


def check_refusal(
    reply: Reply, statuses: Iterable[int], what: str, *, json_body: bool = True
) -> None:
    """Fail unless `reply` is one of `statuses` (all 4xx) and hands out no credential."""
    allowed = set(statuses)
    assert allowed and all(400 <= s < 500 for s in allowed)
    assert reply.status in allowed, (
        f"{what}: expected {sorted(allowed)}, got {reply.status} {reply.body!r}"
    )
    issued = [name for name, attrs in reply.set_cookies.items() if attrs.get("value")]
    assert not issued, f"{what}: the refusal set cookies {issued}"
    assert "X-CSRF-Token" not in reply.headers, f"{what}: the refusal carries a CSRF token"
    if json_body:
        body = reply.body
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and "detail" in body, (
            f"{what}: the error body is not JSON {{error, detail}}: {body!r}"
        )
        leaked = [f for f in CREDENTIAL_FIELDS if f in body]
        assert not leaked, f"{what}: the refusal body carries {leaked}"


Send = Callable[[], Awaitable[Reply]]


async def assert_refused(
    arena: Arena,
    send: Send,
    statuses: int | Sequence[int] = 401,
    what: str = "attack",
    *,
    json_body: bool = True,
) -> Reply:
    """Send one attack and fail unless it is refused without any effect; returns the reply.

    Refused: a 4xx of `statuses`, no credential in cookies, headers or body, every store of
    the configuration holding exactly as many records as before, and the victim's credential
    (obtained before the attack) still answering /me with 200.
    """
    replies = await assert_all_refused(arena, [(what, send)], statuses, json_body=json_body)
    return replies[0]


async def assert_all_refused(
    arena: Arena,
    attacks: Sequence[tuple[str, Send]],
    statuses: int | Sequence[int] = 401,
    *,
    json_body: bool = True,
) -> list[Reply]:
    """`assert_refused` for many (label, send) attacks at once; returns the replies in order.

    The attacks run concurrently (a few at a time) between one store count before and one
    after, so a store change is reported for the batch, a wrong reply by its label.
    """
    expected = [statuses] if isinstance(statuses, int) else list(statuses)
    gate = asyncio.Semaphore(8)

    async def one(send: Send) -> Reply:
        async with gate:
            return await send()

    before = await arena.probes.size()
    replies = await asyncio.gather(*(one(send) for _, send in attacks))
    for (what, _), reply in zip(attacks, replies, strict=True):
        check_refusal(reply, expected, what, json_body=json_body)
    after = await arena.probes.size()
    labels = ", ".join(what for what, _ in attacks)
    assert after == before, f"the stores went from {before} to {after} records after: {labels}"
    still = await arena.client.me(arena.victim)
    assert still.status == 200, f"the victim's credential now gets {still.status} after: {labels}"
    return replies


async def raw_request(
    base: str,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str | bytes]] = (),
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> Reply:
    """Send one HTTP/1.1 request byte for byte (duplicate headers, raw bytes) and read the reply.

    For what aiohttp's client will not send: repeated headers, NUL or invalid UTF-8 bytes,
    no Content-Type at all. Without `content_length`, the caller frames the body itself.
    """
    url = urlsplit(base)
    assert url.hostname and url.port
    head = [f"{method} {path} HTTP/1.1".encode(), f"Host: {url.netloc}".encode()]
    head.append(b"Connection: close")
    for name, value in headers:
        head.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    if content_length and (body or method == "POST"):
        head.append(b"Content-Length: %d" % len(body))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(15):
            data = await reader.read()
    finally:
        writer.close()
    return _parse_reply(data)


def _parse_reply(data: bytes) -> Reply:
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    set_cookies: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        headers[name] = value
        if name.lower() == "set-cookie":
            jar: SimpleCookie = SimpleCookie()
            jar.load(value)
            for cookie, morsel in jar.items():
                set_cookies[cookie] = {
                    "value": morsel.value,
                    **{k: str(v) for k, v in morsel.items() if v},
                }
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("transfer-encoding", "").lower() == "chunked":
        payload = _unchunk(payload)
    elif "content-length" in lowered:
        payload = payload[: int(lowered["content-length"])]
    body: Any = None
    if payload:
        try:
            body = json.loads(payload)
        except ValueError:
            body = payload.decode(errors="replace")
    return Reply(status, headers, set_cookies, body)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out
