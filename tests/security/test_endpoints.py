"""Every endpoint (SECURITY.md, "Every endpoint"), on every configuration.

Bodies that would log a user in if the server were lenient carry the right password, so a
wrongly accepted one shows up as an issued credential and a new record in the store.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial

import pytest

from loadtests.client import Reply
from tests.conftest import CONFIG_IDS
from tests.security.conftest import (
    BEARER_CONFIGS,
    JWT_CONFIGS,
    Arena,
    ArenaFactory,
    Send,
    assert_all_refused,
    assert_refused,
    check_refusal,
    raw_request,
)
from tests.security.forge import claims, forge

ALL = pytest.mark.parametrize("config", CONFIG_IDS)
GOOD_LOGIN: dict[str, object] = {"username": "user1", "password": "secret-1"}
MAX_BODY = 1024 * 1024


def _json_routes(arena: Arena) -> dict[str, dict[str, object]]:
    """Return each route taking a JSON body, with a body it would accept."""
    routes: dict[str, dict[str, object]] = {"/login": GOOD_LOGIN}
    if arena.config in BEARER_CONFIGS:
        assert arena.victim.refresh_token
        routes["/refresh"] = {"refresh_token": arena.victim.refresh_token}
    return routes


def _post(arena: Arena, path: str, body: bytes, content_type: str | None) -> Send:
    headers = [("Content-Type", content_type)] if content_type is not None else []
    return partial(raw_request, arena.client.base, "POST", path, headers, body)


@ALL
async def test_json_bodies_need_content_type_application_json(
    config: str, open_arena: ArenaFactory
) -> None:
    """A valid body under text/plain, a form type, a look-alike type or none at all: 415."""
    arena = await open_arena(config)
    types = [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "application/jsonx",
        "application/json-patch+json",
        "",
        None,
    ]
    attacks = [
        (f"{path} as {content_type!r}", _post(arena, path, json.dumps(body).encode(), content_type))
        for path, body in _json_routes(arena).items()
        for content_type in types
    ]
    form = b"username=user1&password=secret-1"
    attacks.append(("a real form", _post(arena, "/login", form, types[1])))
    replies = await assert_all_refused(arena, attacks, 415)
    assert all(r.body["error"] == "unsupported_media_type" for r in replies)


def _malformed_login_bodies() -> dict[str, bytes]:
    def obj(**fields: object) -> bytes:
        return json.dumps({**GOOD_LOGIN, **fields}).encode()

    bodies = {
        "truncated JSON": b'{"username":"user1","password":"secret-1"',
        "not JSON": b"username=user1",
        "empty": b"",
        "null": b"null",
        "array body": json.dumps([GOOD_LOGIN]).encode(),
        "string body": b'"user1"',
        "number body": b"1",
        "missing username": json.dumps({"password": "secret-1"}).encode(),
        "missing password": json.dumps({"username": "user1"}).encode(),
        "empty object": b"{}",
        "deeply nested": b"[" * 100_000,
        "deeply nested object": b'{"username":' + b'{"a":' * 100_000,
        "invalid UTF-8": b'{"username":"user1\xff","password":"secret-1"}',
        "huge number literal": b'{"username":"user1","password":"secret-1","n":'
        + b"1" * 5000
        + b"}",
        "lone surrogate in the password": b'{"username":"user1","password":"\\ud800"}',
        "lone surrogate in the username": b'{"username":"\\udfff","password":"secret-1"}',
        "username too long": obj(username="u" * 257),
        "password too long": obj(password="p" * 257),
        "empty username": obj(username=""),
    }
    for field in ("username", "password"):
        for label, value in (
            ("a number", 1),
            ("a list", ["user1"]),
            ("null", None),
            ("an object", {}),
        ):
            bodies[f"{field} as {label}"] = obj(**{field: value})
        bodies[f"{field} as true"] = obj(**{field: True})
    return bodies


@ALL
async def test_malformed_bodies_are_400(config: str, open_arena: ArenaFactory) -> None:
    """Malformed JSON, wrong JSON types, missing fields, deep nesting, invalid UTF-8, huge
    numbers and unencodable strings: 400 on /login (and /refresh where it takes a body)."""
    arena = await open_arena(config)
    attacks = [
        (f"/login {label}", _post(arena, "/login", body, "application/json"))
        for label, body in _malformed_login_bodies().items()
    ]
    if "/refresh" in _json_routes(arena):
        refresh_bodies = {
            "refresh_token as a number": b'{"refresh_token":1}',
            "refresh_token as a list": b'{"refresh_token":["x"]}',
            "refresh_token null": b'{"refresh_token":null}',
            "missing refresh_token": b"{}",
            "array body": b'["x"]',
            "truncated JSON": b'{"refresh_token":"',
            "deeply nested": b"[" * 100_000,
        }
        attacks += [
            (f"/refresh {label}", _post(arena, "/refresh", body, "application/json"))
            for label, body in refresh_bodies.items()
        ]
    replies = await assert_all_refused(arena, attacks, 400)
    for (what, _), reply in zip(attacks, replies, strict=True):
        assert reply.body["error"] == "bad_request", f"{what}: {reply.body}"


@ALL
async def test_bodies_over_one_mebibyte_are_413(config: str, open_arena: ArenaFactory) -> None:
    """A valid JSON body padded past 1 MiB: 413, with a Content-Length or chunked."""
    arena = await open_arena(config)
    attacks: list[tuple[str, Send]] = []
    for path, body in _json_routes(arena).items():
        big = json.dumps({**body, "pad": "x" * MAX_BODY}).encode()
        attacks.append((f"{path} with Content-Length", _post(arena, path, big, "application/json")))
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(big[i : i + 65536]), big[i : i + 65536])
            for i in range(0, len(big), 65536)
        )
        headers = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
        send = partial(
            raw_request,
            arena.client.base,
            "POST",
            path,
            headers,
            chunks + b"0\r\n\r\n",
            content_length=False,
        )
        attacks.append((f"{path} chunked", send))
    replies = await assert_all_refused(arena, attacks, 413)
    assert all(r.body["error"] == "payload_too_large" for r in replies)


def _comparable(reply: Reply) -> tuple[int, object, str | None, list[str]]:
    varying = {"date", "server-timing"}
    names = sorted(k.lower() for k in reply.headers if k.lower() not in varying)
    return reply.status, reply.body, reply.headers.get("WWW-Authenticate"), names


@ALL
async def test_unknown_user_and_wrong_password_get_the_same_answer(
    config: str, open_arena: ArenaFactory
) -> None:
    """Status, body, challenge and header set are identical for both failures."""
    arena = await open_arena(config)
    attempts = {
        "unknown user": ("nobody", "secret-1"),
        "wrong password": ("user2", "secret-1"),
        "unknown user, wrong password": ("user99999", "nope"),
        "case-changed user": ("USER1", "secret-1"),
    }
    answers: dict[str, tuple[int, object, str | None, list[str]]] = {}
    for label, (username, password) in attempts.items():

        async def send(u: str = username, p: str = password) -> Reply:
            return (await arena.client.login(u, p))[0]

        reply = await assert_refused(arena, send, 401, label)
        answers[label] = _comparable(reply)
    assert len(set(map(repr, answers.values()))) == 1, answers


@ALL
async def test_repeated_failures_are_throttled(config: str, open_arena: ArenaFactory) -> None:
    """After `login_max_failures` failures a name gets 429 with Retry-After, even with the
    right password; unknown names are throttled alike; other names are unaffected."""
    arena = await open_arena(config, login_max_failures=3)
    for username, password in (("user4", "secret-4"), ("ghost", "secret-4")):
        for i in range(3):
            reply, _ = await arena.client.login(username, f"wrong-{i}")
            check_refusal(reply, [401], f"{username} failure {i + 1}")

        async def wrong(u: str = username) -> Reply:
            return (await arena.client.login(u, "wrong-again"))[0]

        async def right(u: str = username, p: str = password) -> Reply:
            return (await arena.client.login(u, p))[0]

        for what, send in (("another failure", wrong), ("the right password", right)):
            reply = await assert_refused(arena, send, 429, f"{username}: {what} when throttled")
            assert reply.body["error"] == "too_many_attempts"
            assert int(reply.headers["Retry-After"]) >= 1, reply.headers
    reply, cred = await arena.client.login("user5", "secret-5")
    assert reply.status == 200 and cred is not None, "throttling one name locked out another"


@ALL
async def test_concurrent_failures_cannot_outrun_the_throttle(
    config: str, open_arena: ArenaFactory
) -> None:
    """Twelve wrong passwords at once with a limit of three: at most three are checked."""
    arena = await open_arena(config, login_max_failures=3)
    replies = await asyncio.gather(*(arena.client.login("user6", f"wrong-{i}") for i in range(12)))
    statuses = sorted(reply.status for reply, _ in replies)
    assert statuses.count(401) <= 3 and set(statuses) <= {401, 429}, statuses
    reply, _ = await arena.client.login("user6", "secret-6")
    check_refusal(reply, [429], "the right password after a burst of failures")


@ALL
async def test_unknown_routes_and_wrong_methods_get_json_errors(
    config: str, open_arena: ArenaFactory
) -> None:
    """404 for unknown paths, 405 (with Allow) for known paths and wrong methods, both with
    the contract's JSON error body."""
    arena = await open_arena(config)
    headers = arena.victim.headers()
    attacks: list[tuple[str, Send]] = []
    expected: dict[str, int] = {}
    requests = {
        ("GET", "/nope"): 404,
        ("GET", "/me/"): 404,
        ("GET", "/admin"): 404,
        ("GET", "/%2e%2e/etc/passwd"): 404,
        ("POST", "/login/.."): 404,
        ("GET", "/login"): 405,
        ("PUT", "/login"): 405,
        ("POST", "/me"): 405,
        ("DELETE", "/me"): 405,
        ("GET", "/logout"): 405,
        ("GET", "/refresh"): 405,
        ("PATCH", "/refresh"): 405,
        ("TRACE", "/me"): 405,
    }
    for (method, path), status in requests.items():
        label = f"{method} {path}"
        attacks.append((label, partial(arena.client.request, method, path, headers=headers)))
        expected[label] = status
    replies = await assert_all_refused(arena, attacks, (404, 405))
    for (what, _), reply in zip(attacks, replies, strict=True):
        assert reply.status == expected[what], f"{what}: {reply.status}"
        if reply.status == 405:
            assert reply.headers.get("Allow"), f"{what}: 405 without Allow"


@ALL
async def test_request_heads_up_to_16_kib_reach_the_auth_step(
    config: str, open_arena: ArenaFactory
) -> None:
    """A header field over 16 KiB is a 4xx from the HTTP layer; a 12 KiB credential is read
    and judged (401 for junk, 200 next to the real credential)."""
    arena = await open_arena(config)
    junk = "a" * 12 * 1024
    if arena.settings.is_jwt and arena.settings.transport == "bearer":
        junk_head = {"Authorization": f"Bearer {junk}"}
        code = "invalid_token"
    else:
        name = "access_token" if arena.settings.is_jwt else "session_id"
        junk_head = {"Cookie": f"{name}={junk}"}
        code = "invalid_token" if arena.settings.is_jwt else "invalid_session"

    async def big_junk() -> Reply:
        return await arena.client.request("GET", "/me", headers=junk_head)

    async def too_big() -> Reply:
        headers = {**arena.victim.headers(), "X-Padding": "p" * 17 * 1024}
        return await arena.client.request("GET", "/me", headers=headers)

    reply = await assert_refused(arena, big_junk, 401, "12 KiB junk credential")
    assert reply.body["error"] == code, reply.body
    await assert_refused(arena, too_big, (400, 413, 431), "17 KiB header", json_body=False)
    if arena.config in JWT_CONFIGS:
        big = forge(arena, payload=claims(arena, padding="x" * 9 * 1024))
        assert 12 * 1024 - 1024 < len(big) < 16 * 1024 - 100
        reply = await arena.me_with(big)
    else:
        headers = {"Cookie": f"{arena.victim.headers()['Cookie']}; padding={junk}"}
        reply = await arena.client.request("GET", "/me", headers=headers)
    assert reply.status == 200, f"a 12 KiB credential header was not served: {reply.status}"
