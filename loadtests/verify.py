"""Verify before measuring: the contract checks run against a live server, with store probes.

The pytest conformance suite and the bench runner's gate run these same checks: a check
proves the work happened (the record is in the store, the row is gone), not just a status.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from loadtests.client import AuthClient, Credential, Reply
from loadtests.probes import Probes, open_probes
from servers.settings import Settings


class Outcome(enum.Enum):
    """How one check ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """One check's name, outcome and, unless it passed, why."""

    name: str
    outcome: Outcome
    detail: str = ""


class VerificationFailed(AssertionError):
    """Raised by a check whose expectation the server did not meet."""


class CheckSkipped(Exception):
    """Raised by a check that does not apply to the configuration."""


@dataclass(frozen=True)
class Target:
    """The live server under verification and what it was started with."""

    client: AuthClient
    settings: Settings
    probes: Probes


def expect(condition: object, message: str) -> None:
    """Return if `condition` holds; raises VerificationFailed(message) otherwise."""
    if not condition:
        raise VerificationFailed(message)


def expect_status(reply: Reply, status: int, what: str) -> None:
    """Raise VerificationFailed unless `reply` has `status`, quoting its body."""
    expect(reply.status == status, f"{what}: expected {status}, got {reply.status} {reply.body}")


def expect_error_body(reply: Reply, what: str) -> None:
    """Raise VerificationFailed unless the body is the contract's JSON error shape."""
    body = reply.body
    expect(
        isinstance(body, dict) and isinstance(body.get("error"), str) and "detail" in body,
        f"{what}: error body is not {{error, detail}}: {body!r}",
    )


async def login(t: Target, i: int) -> Credential:
    """Log in as user{i}; raises VerificationFailed unless it works."""
    reply, cred = await t.client.login(f"user{i}", f"secret-{i}")
    expect_status(reply, 200, f"login user{i}")
    assert cred is not None
    return cred


def _stateful_refresh(s: Settings) -> bool:
    return s.is_jwt and s.refresh_store != "none"


async def check_health(t: Target) -> None:
    """/health is 200 and names the backend."""
    reply = await t.client.request("GET", "/health")
    expect_status(reply, 200, "GET /health")
    expect(reply.body.get("backend") == t.settings.backend, f"/health names {reply.body}")


async def check_public(t: Target) -> None:
    """/public needs no credential and still carries Server-Timing."""
    reply = await t.client.request("GET", "/public")
    expect_status(reply, 200, "GET /public")
    expect("auth" in reply.server_timing, "GET /public lacks Server-Timing auth")


async def check_login_issues_credential(t: Target) -> None:
    """Login returns the user and a credential of the contract's shape, recorded in the store."""
    reply, cred = await t.client.login("user1", "secret-1")
    expect_status(reply, 200, "login")
    assert cred is not None
    user = {"id": 1, "username": "user1", "role": "user"}
    expect(reply.body.get("user") == user, f"login body user is {reply.body.get('user')}")
    timing = reply.server_timing
    expect({"pw", "issue"} <= timing.keys(), f"login Server-Timing lacks pw/issue: {timing}")
    s = t.settings
    for name, attrs in reply.set_cookies.items():
        expect("httponly" in attrs, f"cookie {name} is not HttpOnly")
        expect(attrs.get("samesite", "").lower() == "lax", f"cookie {name} is not SameSite=Lax")
        expect(attrs.get("path", "").startswith("/"), f"cookie {name} has no Path")
    if s.uses_cookies:
        expect(cred.csrf, "a cookie transport must return csrf_token")
    if not s.is_jwt:
        sid = cred.session_id
        expect(sid, "no session_id cookie")
        assert sid is not None and t.probes.sessions is not None
        expect(await t.probes.sessions.has_session(sid), "the session record is not in the store")
        return
    if s.transport == "bearer":
        for key in ("access_token", "token_type", "expires_in", "refresh_token"):
            expect(key in reply.body, f"login body lacks {key}")
        expect(reply.body["token_type"] == "Bearer", "token_type is not Bearer")  # noqa: S105
    else:
        expect({"access_token", "refresh_token"} <= cred.cookies.keys(), "token cookies missing")
    if t.probes.families is not None:
        refresh = cred.claims("refresh")
        current = await t.probes.families.family_jti(refresh["fam"])
        expect(current == refresh["jti"], "the refresh family is not recorded in the store")


async def check_me(t: Target) -> None:
    """/me returns the credential's user; user0 is the admin."""
    for i, role in ((2, "user"), (0, "admin")):
        cred = await login(t, i)
        reply = await t.client.me(cred)
        expect_status(reply, 200, "GET /me")
        expected = {"id": i, "username": f"user{i}", "role": role}
        expect(reply.body == expected, f"/me returned {reply.body}, expected {expected}")
        expect("auth" in reply.server_timing, "/me lacks Server-Timing auth")


async def check_me_requires_credential(t: Target) -> None:
    """/me without a credential is 401 with WWW-Authenticate and a JSON error body."""
    reply = await t.client.me(None)
    expect_status(reply, 401, "GET /me without credential")
    expect("WWW-Authenticate" in reply.headers, "401 without WWW-Authenticate")
    expect_error_body(reply, "GET /me without credential")


async def check_bad_credentials(t: Target) -> None:
    """A wrong password and an unknown user get the same 401 and no credential."""
    before = await t.probes.size()
    wrong, _ = await t.client.login("user2", "not-the-password")
    unknown, _ = await t.client.login("nobody", "secret-2")
    for reply in (wrong, unknown):
        expect_status(reply, 401, "bad login")
        expect(not reply.set_cookies, "a failed login set a cookie")
        expect_error_body(reply, "bad login")
    expect(wrong.body == unknown.body, "unknown user and wrong password answer differently")
    expect(await t.probes.size() == before, "a failed login changed the store")


async def check_refresh_rotates(t: Target) -> None:
    """Refresh hands a new credential; the old one is spent (and, replayed, kills the family)."""
    old = await login(t, 3)
    reply, new = await t.client.refresh(old)
    expect_status(reply, 200, "refresh")
    expect(new != old, "refresh returned the same credential")
    expect_status(await t.client.me(new), 200, "/me with the refreshed credential")
    s = t.settings
    if not s.is_jwt:
        assert old.session_id and new.session_id and t.probes.sessions is not None
        expect(old.session_id != new.session_id, "refresh kept the session id")
        expect_status(await t.client.me(old), 401, "/me with the rotated-away session id")
        expect(not await t.probes.sessions.has_session(old.session_id), "old session remains")
        expect(await t.probes.sessions.has_session(new.session_id), "new session not stored")
        return
    replay, _ = await t.client.refresh(old)
    if not _stateful_refresh(s):
        # Stateless refresh cannot detect reuse: the spent token still works until it expires.
        expect_status(replay, 200, "replayed refresh token (stateless)")
        return
    expect_status(replay, 401, "replayed refresh token")
    expect(replay.body.get("error") == "invalid_grant", f"replay answered {replay.body}")
    fam = new.claims("refresh")["fam"]
    assert t.probes.families is not None
    expect(await t.probes.families.family_jti(fam) is None, "replay did not revoke the family")
    after, _ = await t.client.refresh(new)
    expect_status(after, 401, "refresh with a token of the revoked family")


async def check_logout(t: Target) -> None:
    """Logout is 204 and kills the credential wherever the mechanism allows it."""
    cred = await login(t, 4)
    reply = await t.client.logout(cred)
    expect_status(reply, 204, "logout")
    s = t.settings
    after = await t.client.me(cred)
    if not s.is_jwt:
        assert cred.session_id and t.probes.sessions is not None
        expect(reply.set_cookies.get("session_id", {}).get("value") == "", "cookie not cleared")
        expect(not await t.probes.sessions.has_session(cred.session_id), "session row remains")
        expect_status(after, 401, "/me after logout")
        expect_status(await t.client.logout(cred), 401, "second logout")
    elif s.backend == "jwt-denylist":
        assert t.probes.denylist is not None
        expect(await t.probes.denylist.is_denied(cred.claims()["jti"]), "jti not denylisted")
        expect_status(after, 401, "/me after logout")
    else:
        # Stateless access tokens outlive logout until `exp`: the trade-off being measured.
        expect_status(after, 200, "/me after logout (stateless token lives until exp)")
    if _stateful_refresh(s):
        assert t.probes.families is not None
        fam = cred.claims("refresh")["fam"]
        expect(await t.probes.families.family_jti(fam) is None, "logout left the family alive")
        refreshed, _ = await t.client.refresh(cred)
        expect_status(refreshed, 401, "refresh after logout")


async def check_csrf(t: Target) -> None:
    """Cookie transports refuse logout and refresh without X-CSRF-Token (403)."""
    if not t.settings.uses_cookies:
        raise CheckSkipped("bearer transport: no ambient credential, no CSRF")
    cred = await login(t, 5)
    expect_status(await t.client.logout(cred, csrf=False), 403, "logout without CSRF token")
    reply, _ = await t.client.refresh(cred, csrf=False)
    expect_status(reply, 403, "refresh without CSRF token")
    expect_status(await t.client.me(cred), 200, "/me after refused logout")
    expect_status(await t.client.logout(cred), 204, "logout with CSRF token")


Check = Callable[[Target], Awaitable[None]]
CHECKS: dict[str, Check] = {
    "health": check_health,
    "public": check_public,
    "login": check_login_issues_credential,
    "me": check_me,
    "me-requires-credential": check_me_requires_credential,
    "bad-credentials": check_bad_credentials,
    "refresh": check_refresh_rotates,
    "logout": check_logout,
    "csrf": check_csrf,
}


async def run_check(name: str, target: Target) -> CheckResult:
    """Run one check and return its result; never raises for a failed expectation."""
    try:
        await CHECKS[name](target)
    except CheckSkipped as exc:
        return CheckResult(name, Outcome.SKIPPED, str(exc))
    except (VerificationFailed, aiohttp.ClientError, TimeoutError, KeyError, TypeError) as exc:
        return CheckResult(name, Outcome.FAILED, f"{type(exc).__name__}: {exc}")
    return CheckResult(name, Outcome.PASSED)


async def verify(base_url: str, settings: Settings) -> list[CheckResult]:
    """Return the result of every check against the server at `base_url` started with `settings`."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        open_probes(settings) as probes,
    ):
        target = Target(AuthClient(http, base_url), settings, probes)
        return [await run_check(name, target) for name in CHECKS]
