"""Server-side sessions (SECURITY.md, "Sessions"), on every session configuration.

Ids that are not exactly the server's format are sent with a valid CSRF token for that very
id (the test knows the CSRF secret), so only the format check stands between them and the
store; the store must not change and, for the file store, nothing outside its directory may
be read, written or deleted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import aiomcache
import asyncpg
import pytest
from redis.asyncio import Redis

from servers.credentials import csrf_token
from servers.settings import Settings
from tests.security.conftest import (
    SESSION_CONFIGS,
    SESSION_STORE_CONFIGS,
    Arena,
    ArenaFactory,
    Send,
    assert_all_refused,
    check_refusal,
    raw_request,
)

SESSIONS = pytest.mark.parametrize("config", SESSION_CONFIGS)
ID_LENGTH = 43  # the server's format: 32 random bytes, base64url without padding
# Named so that `trap/../../<name>` is exactly as long as a real id.
SENTINEL = "sentinel" + "x" * 24


def malformed_ids() -> dict[str, bytes]:
    """Return session ids of every wrong shape, as the raw bytes of a cookie value."""
    good = secrets.token_urlsafe(32)
    return {
        "empty": b"",
        "one short": good[:-1].encode(),
        "one long": (good + "A").encode(),
        "padded": (good + "=").encode(),
        "invalid character": (good[:-1] + "!").encode(),
        "standard base64": (good[:-2] + "+/").encode(),
        "dot-dot-slash": ("../" * 14 + "a").encode(),
        "absolute path": b"/etc/passwd" + b"A" * 32,
        "traversal to a planted file": f"trap/../../{SENTINEL}".encode(),
        "NUL": (good[:-1] + "\x00").encode(),
        "space": (good[:21] + " " + good[22:]).encode(),
        "memcached command": b"x flush_all noreply" + b"A" * 24,
        "SQL": b"' OR '1'='1' -- " + b"A" * 27,
        "very long": b"A" * 8000,
        "unicode": ("é" * 43).encode(),
        "unicode digits": ("\u0661" * 43).encode(),
        "invalid utf-8": b"\xff" * 43,
        "quoted": b'"' + good.encode() + b'"',
    }


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Return every file under `root` with its mtime and content."""
    found: dict[str, tuple[int, bytes]] = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = (path.stat().st_mtime_ns, path.read_bytes())
    return found


def _attacks_with_ids(arena: Arena, ids: dict[str, bytes]) -> list[tuple[str, Send]]:
    attacks: list[tuple[str, Send]] = []
    base = arena.client.base
    secret = arena.settings.csrf_secret
    for label, sid in ids.items():
        try:
            csrf = csrf_token(secret, sid.decode())
        except UnicodeDecodeError:
            csrf = "x"  # no text to bind a token to: the id is refused before CSRF anyway
        for method, path in (("GET", "/me"), ("POST", "/logout"), ("POST", "/refresh")):
            headers: list[tuple[str, str | bytes]] = [
                ("Cookie", b"session_id=" + sid),
                ("X-CSRF-Token", csrf),
            ]
            send = partial(raw_request, base, method, path, headers)
            attacks.append((f"{method} {path} with a {label} id", send))
    return attacks


@SESSIONS
async def test_session_ids_are_random_opaque_and_long(
    config: str, open_arena: ArenaFactory
) -> None:
    """Ids are 256 bits of base64url (at least 128 required), different on every login, and
    carry nothing of the user."""
    arena = await open_arena(config)
    ids = [arena.victim.session_id] + [(await arena.login(1)).session_id for _ in range(3)]
    assert all(ids) and len(set(ids)) == len(ids), ids
    for sid in ids:
        assert sid is not None and len(sid) == ID_LENGTH, sid
        raw = base64.urlsafe_b64decode(sid + "=")
        assert len(raw) * 8 >= 128, f"only {len(raw) * 8} bits"
        assert b"user1" not in raw and "user1" not in sid


@SESSIONS
async def test_malformed_ids_are_absent_and_never_reach_the_store(
    config: str, open_arena: ArenaFactory
) -> None:
    """Too short or long, bad characters, paths, NUL, commands, unicode: 401 (or a 400 from
    the HTTP parser) on /me, /logout and /refresh, and no store access that changes anything."""
    arena = await open_arena(config)
    attacks = _attacks_with_ids(arena, malformed_ids())
    replies = await assert_all_refused(arena, attacks, (400, 401), json_body=False)
    for (what, _), reply in zip(attacks, replies, strict=True):
        if reply.status == 401:
            assert reply.body["error"] == "invalid_session", f"{what}: {reply.body}"


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[Path]:
    """A valid admin session record outside the session directory, and a `sess_trap`
    directory inside it through which a path could climb out if ids were not checked."""
    now = time.time()
    sentinel = tmp_path / SENTINEL
    sentinel.write_bytes(json.dumps({"u": 0, "c": now, "e": now + 3600}).encode())
    (tmp_path / "sessions" / "sess_trap").mkdir(parents=True)
    yield sentinel


async def test_the_file_store_never_leaves_its_directory(
    planted: Path, tmp_path: Path, open_arena: ArenaFactory
) -> None:
    """Cookies that would climb out of the session directory read, write and delete nothing:
    the planted admin record is not honoured, not touched, not removed."""
    arena = await open_arena("session-file")
    before = _tree(tmp_path)
    attacks = _attacks_with_ids(arena, malformed_ids())
    replies = await assert_all_refused(arena, attacks, (400, 401), json_body=False)
    assert all(r.status != 200 for r in replies)
    assert planted.name in before
    assert _tree(tmp_path) == before, "a file outside the sessions was created, changed or removed"


@SESSIONS
async def test_login_always_issues_a_new_id(config: str, open_arena: ArenaFactory) -> None:
    """No fixation: a login carrying a planted id (the attacker's live one, or an unknown one)
    gets a fresh id, and the planted id gains nothing."""
    arena = await open_arena(config)
    attacker = await arena.login(2)
    assert attacker.session_id is not None and arena.probes.sessions is not None
    unknown = secrets.token_urlsafe(32)
    for planted in (attacker.session_id, unknown):
        reply = await arena.client.request(
            "POST",
            "/login",
            headers={"Cookie": f"session_id={planted}"},
            json_body={"username": "user1", "password": "secret-1"},
        )
        assert reply.status == 200
        issued = reply.set_cookies["session_id"]["value"]
        assert issued and issued != planted, "the login kept the client's session id"
    me = await arena.client.me(attacker)
    assert me.status == 200 and me.body["username"] == "user2", "the planted id changed owner"
    assert not await arena.probes.sessions.has_session(unknown), "the unknown id was created"


@SESSIONS
async def test_refresh_issues_a_new_id_and_kills_the_old(
    config: str, open_arena: ArenaFactory
) -> None:
    """/refresh moves the session to a new id; the old id is gone from the store and 401."""
    arena = await open_arena(config)
    old = arena.victim
    reply, new = await arena.client.refresh(old)
    assert reply.status == 200, reply.body
    assert new.session_id and new.session_id != old.session_id
    assert arena.probes.sessions is not None and old.session_id is not None
    assert not await arena.probes.sessions.has_session(old.session_id)
    assert await arena.probes.sessions.has_session(new.session_id)
    check_refusal(await arena.client.me(old), [401], "the pre-refresh id")
    assert (await arena.client.me(new)).status == 200


@SESSIONS
async def test_unknown_ids_never_create_a_session(config: str, open_arena: ArenaFactory) -> None:
    """Strict mode: a well-formed id the server never issued is 401 everywhere and stays
    unknown to the store (sliding expiry must not create it either)."""
    arena = await open_arena(config)
    unknown = secrets.token_urlsafe(32)
    headers = arena.session_headers(unknown)
    attacks: list[tuple[str, Send]] = [
        (f"{m} {p}", partial(arena.client.request, m, p, headers=headers))
        for m, p in (("GET", "/me"), ("POST", "/logout"), ("POST", "/refresh"), ("GET", "/me"))
    ]
    await assert_all_refused(arena, attacks, 401)
    assert arena.probes.sessions is not None
    assert not await arena.probes.sessions.has_session(unknown)


@SESSIONS
async def test_logout_deletes_the_record_and_clears_the_cookie(
    config: str, open_arena: ArenaFactory
) -> None:
    """Logout: 204, the record is gone, the cookie is cleared, and replaying the id is 401."""
    arena = await open_arena(config)
    cred = arena.victim
    assert cred.session_id is not None and arena.probes.sessions is not None
    reply = await arena.client.logout(cred)
    assert reply.status == 204
    cleared = reply.set_cookies.get("session_id")
    assert cleared is not None and cleared["value"] == "", reply.set_cookies
    assert cleared.get("max-age") == "0", cleared
    assert not await arena.probes.sessions.has_session(cred.session_id)
    check_refusal(await arena.client.me(cred), [401], "/me with the logged-out id")
    check_refusal(await arena.client.logout(cred), [401], "/logout with the logged-out id")
    replayed, _ = await arena.client.refresh(cred)
    check_refusal(replayed, [401], "/refresh with the logged-out id")


async def _forget(settings: Settings, sid: str) -> None:
    # memcached keeps an item up to a second past the server's deadline and Redis reclaims
    # expired keys lazily: drop them now so later tests' store counts stay exact.
    async with AsyncExitStack() as stack:
        if settings.backend == "session-redis" and settings.redis_url:
            redis = Redis.from_url(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            await redis.delete(f"sess:{sid}")
        elif settings.backend == "session-memcached" and settings.memcached_url:
            host, port = settings.memcached_url.removeprefix("memcached://").split(":")
            mc = aiomcache.Client(host, int(port))
            stack.push_async_callback(mc.close)
            await mc.delete(b"sess:" + sid.encode())
        elif settings.backend == "session-postgres" and settings.database_url:
            conn = await asyncpg.connect(settings.database_url)
            stack.push_async_callback(conn.close)
            await conn.execute("DELETE FROM sessions WHERE id = $1", sid)


# Whole seconds: memcached's expiry clock ticks once a second (see the report on its TTLs).
IDLE_TTL = 2.0
ABSOLUTE_TTL = 3.0


async def _idle_timeout(open_arena: ArenaFactory, config: str) -> None:
    arena = await open_arena(config, session_ttl=IDLE_TTL, sliding=False)
    assert (await arena.client.me(arena.victim)).status == 200
    await asyncio.sleep(IDLE_TTL + 0.4)
    check_refusal(await arena.client.me(arena.victim), [401], "a session idle past its TTL")
    assert arena.victim.session_id is not None
    await _forget(arena.settings, arena.victim.session_id)


async def _absolute_timeout(open_arena: ArenaFactory, config: str) -> None:
    arena = await open_arena(
        config, session_ttl=IDLE_TTL, session_absolute_ttl=ABSOLUTE_TTL, sliding=True
    )
    for _ in range(4):  # activity every 0.55 s keeps it alive past its idle TTL …
        await asyncio.sleep(0.55)
        assert (await arena.client.me(arena.victim)).status == 200, "sliding expiry not renewed"
    await asyncio.sleep(ABSOLUTE_TTL + 0.3 - 4 * 0.55)  # … but not past its absolute one
    reply = await arena.client.me(arena.victim)
    check_refusal(reply, [401], "an active session past its absolute TTL")
    assert arena.victim.session_id is not None
    await _forget(arena.settings, arena.victim.session_id)


@pytest.mark.parametrize("config", SESSION_STORE_CONFIGS)
async def test_idle_and_absolute_timeouts_are_enforced(
    config: str, open_arena: ArenaFactory
) -> None:
    """A session idle past `session_ttl` is dead; an active, sliding one dies at
    `session_absolute_ttl` anyway (two servers, run side by side)."""
    await asyncio.gather(_idle_timeout(open_arena, config), _absolute_timeout(open_arena, config))
