"""Cookies and CSRF (SECURITY.md, "Sessions", last bullet), on every cookie transport:
session cookies and the JWT cookie transport alike."""

from __future__ import annotations

from functools import partial

import pytest

from loadtests.client import Credential
from tests.security.conftest import (
    COOKIE_CONFIGS,
    Arena,
    ArenaFactory,
    Send,
    assert_all_refused,
    raw_request,
)

COOKIES = pytest.mark.parametrize("config", COOKIE_CONFIGS)
# The refresh cookie is deliberately narrower than `/`: it only ever travels to /refresh.
EXPECTED_PATHS = {"session_id": "/", "access_token": "/", "refresh_token": "/refresh"}


def credential_cookie(arena: Arena) -> str:
    """Return the name of the cookie that authenticates /me and /logout."""
    return "access_token" if arena.settings.is_jwt else "session_id"


def cookie_header(cred: Credential, **replace: str) -> str:
    """Return the credential's Cookie header, with some values replaced."""
    return "; ".join(f"{k}={replace.get(k, v)}" for k, v in cred.cookies.items())


async def _set_cookies_of_a_whole_walk(arena: Arena) -> list[tuple[str, dict[str, str]]]:
    """Log in, refresh and log out; return every Set-Cookie the server sent on the way."""
    seen: list[tuple[str, dict[str, str]]] = []
    reply, cred = await arena.client.login("user3", "secret-3")
    assert reply.status == 200 and cred is not None
    seen += reply.set_cookies.items()
    reply, cred = await arena.client.refresh(cred)
    assert reply.status == 200, reply.body
    seen += reply.set_cookies.items()
    reply = await arena.client.logout(cred)
    assert reply.status == 204, reply.body
    seen += reply.set_cookies.items()
    return seen


@COOKIES
async def test_credential_cookies_are_httponly_samesite_and_scoped(
    config: str, open_arena: ArenaFactory
) -> None:
    """Every credential cookie set by login, refresh and logout is HttpOnly, SameSite, with an
    explicit Path (`/`, and `/refresh` for the refresh token), and no Domain."""
    arena = await open_arena(config)
    seen = await _set_cookies_of_a_whole_walk(arena)
    assert {name for name, _ in seen} >= {credential_cookie(arena)}
    for name, attrs in seen:
        assert "httponly" in attrs, f"{name} is not HttpOnly: {attrs}"
        assert attrs.get("samesite", "").lower() in ("lax", "strict"), f"{name}: {attrs}"
        assert attrs.get("path") == EXPECTED_PATHS[name], f"{name}: {attrs}"
        assert "domain" not in attrs, f"{name} is shared with other hosts: {attrs}"


@COOKIES
async def test_cookies_are_secure_when_configured(config: str, open_arena: ArenaFactory) -> None:
    """With `cookie_secure` (a server behind TLS), every cookie, cleared ones too, is Secure."""
    arena = await open_arena(config, cookie_secure=True)
    seen = await _set_cookies_of_a_whole_walk(arena)
    assert seen
    for name, attrs in seen:
        assert "secure" in attrs, f"{name} is not Secure: {attrs}"


@COOKIES
async def test_duplicate_credential_cookies_are_rejected(
    config: str, open_arena: ArenaFactory
) -> None:
    """The credential cookie twice (in one header or in two Cookie headers), in any order and
    even with the same value: 400, not authenticated, on /me, /logout and /refresh."""
    arena = await open_arena(config)
    victim = arena.victim
    csrf = victim.csrf or ""
    other = await arena.login(2)
    attacks: list[tuple[str, Send]] = []
    # Each cookie where it is the credential: the refresh cookie only counts on /refresh.
    routes = {credential_cookie(arena): [("GET", "/me"), ("POST", "/logout")]}
    refresh_cookie = "refresh_token" if arena.settings.is_jwt else "session_id"
    routes.setdefault(refresh_cookie, []).append(("POST", "/refresh"))
    for name, methods in routes.items():
        real, bogus = victim.cookies[name], other.cookies[name]
        full = cookie_header(victim)
        shapes: dict[str, list[tuple[str, str | bytes]]] = {
            "same value twice": [("Cookie", f"{full}; {name}={real}")],
            "real then another": [("Cookie", f"{full}; {name}={bogus}")],
            "another then real": [("Cookie", f"{name}={bogus}; {full}")],
            "two Cookie headers": [("Cookie", full), ("Cookie", f"{name}={bogus}")],
            "two Cookie headers, same value": [("Cookie", full), ("Cookie", f"{name}={real}")],
        }
        for label, cookies in shapes.items():
            for method, path in methods:
                headers = [*cookies, ("X-CSRF-Token", csrf)]
                send = partial(raw_request, arena.client.base, method, path, headers)
                attacks.append((f"{name} {label}: {method} {path}", send))
    replies = await assert_all_refused(arena, attacks, 400)
    for (what, _), reply in zip(attacks, replies, strict=True):
        assert reply.body["error"] == "ambiguous_credential", f"{what}: {reply.body}"
    assert (await arena.client.me(other)).status == 200


@COOKIES
async def test_unsafe_methods_need_the_csrf_token_of_their_own_credential(
    config: str, open_arena: ArenaFactory
) -> None:
    """POST /logout and /refresh with a missing, wrong, empty, repeated, non-ASCII or foreign
    X-CSRF-Token (or the token in a cookie): 403, and the credential is untouched."""
    arena = await open_arena(config)
    victim = arena.victim
    real = victim.csrf
    assert real, "a cookie transport must hand out a CSRF token"
    other = await arena.login(2)
    assert other.csrf and other.csrf != real
    cookies = cookie_header(victim)
    variants: dict[str, list[tuple[str, str | bytes]]] = {
        "missing": [],
        "wrong": [("X-CSRF-Token", "A" * len(real))],
        "empty": [("X-CSRF-Token", "")],
        "another session's": [("X-CSRF-Token", other.csrf)],
        "truncated": [("X-CSRF-Token", real[:-1])],
        "repeated": [("X-CSRF-Token", real), ("X-CSRF-Token", real)],
        "non-ASCII": [("X-CSRF-Token", "é" * len(real))],
        "invalid UTF-8": [("X-CSRF-Token", b"\xff\xfe" * 16)],
        "sent as a cookie": [("Cookie", f"X-CSRF-Token={real}")],  # a second Cookie header
    }
    attacks: list[tuple[str, Send]] = []
    for label, extra in variants.items():
        for path in ("/logout", "/refresh"):
            headers = [("Cookie", cookies), *extra]
            send = partial(raw_request, arena.client.base, "POST", path, headers)
            attacks.append((f"{label} CSRF token on {path}", send))
    replies = await assert_all_refused(arena, attacks, 403)
    for (what, _), reply in zip(attacks, replies, strict=True):
        assert reply.body["error"] == "csrf_failed", f"{what}: {reply.body}"
    # The same requests with the right token work, so the refusals above were the CSRF check.
    reply, _ = await arena.client.refresh(victim)
    assert reply.status == 200, reply.body
