"""Refresh tokens (SECURITY.md, "Refresh tokens"): rotation, reuse detection, races, logout.

Run on every configuration with a refresh-family store; `jwt-stateless` (refresh store
`none`) cannot detect reuse by design and is reported as such by /health, so it is only
held to the type separation.
"""

from __future__ import annotations

import asyncio
import secrets
from functools import partial

import pytest

from loadtests.client import Credential, Reply
from tests.security.conftest import (
    JWT_CONFIGS,
    STATEFUL_REFRESH_CONFIGS,
    Arena,
    ArenaFactory,
    Send,
    assert_all_refused,
    assert_refused,
    check_refusal,
)
from tests.security.forge import claims, forge

STATEFUL = pytest.mark.parametrize("config", STATEFUL_REFRESH_CONFIGS)


def refresh_token(cred: Credential) -> str:
    """Return the credential's refresh token, from the body or the HttpOnly cookie."""
    return cred.refresh_token or cred.cookies["refresh_token"]


def access_token(cred: Credential) -> str:
    """Return the credential's access token, from the body or the cookie."""
    return cred.access_token or cred.cookies["access_token"]


async def family_of(arena: Arena, cred: Credential) -> str | None:
    """Return the current refresh jti the store holds for the credential's family."""
    assert arena.probes.families is not None
    return await arena.probes.families.family_jti(cred.claims("refresh")["fam"])


async def spend(arena: Arena, cred: Credential) -> Reply:
    """POST /refresh with the credential's refresh token (and CSRF on cookie transports)."""
    return await arena.refresh_with(refresh_token(cred), cred.csrf or "")


@STATEFUL
async def test_every_refresh_rotates_the_token(config: str, open_arena: ArenaFactory) -> None:
    """Each use returns a new refresh token (new jti, same family) and the store follows it."""
    arena = await open_arena(config)
    cred = arena.victim
    seen = {cred.claims("refresh")["jti"]}
    for _ in range(3):
        reply, cred = await arena.client.refresh(cred)
        assert reply.status == 200, reply.body
        jti = cred.claims("refresh")["jti"]
        assert jti not in seen, "the refresh token was not rotated"
        seen.add(jti)
        assert cred.claims("refresh")["fam"] == arena.victim.claims("refresh")["fam"]
        assert await family_of(arena, cred) == jti
        assert (await arena.client.me(cred)).status == 200


@STATEFUL
async def test_a_replayed_refresh_token_revokes_its_family(
    config: str, open_arena: ArenaFactory
) -> None:
    """Replaying a spent token is invalid_grant and kills the family's newer tokens too."""
    arena = await open_arena(config)
    spent = arena.victim
    reply, current = await arena.client.refresh(spent)
    assert reply.status == 200, reply.body
    replay = await spend(arena, spent)
    check_refusal(replay, [401], "replayed refresh token")
    assert replay.body["error"] == "invalid_grant"
    assert await family_of(arena, spent) is None, "the family survived a replay"
    after = await spend(arena, current)
    check_refusal(after, [401], "the family's newest token after a replay")


@STATEFUL
async def test_a_replayed_alias_of_a_spent_token_is_still_a_replay(
    config: str, open_arena: ArenaFactory
) -> None:
    """Families are keyed on jti: the spent token with other base64 padding is no new token."""
    arena = await open_arena(config)
    spent = arena.victim
    reply, _ = await arena.client.refresh(spent)
    assert reply.status == 200, reply.body
    h, p, s = refresh_token(spent).split(".")
    alias = f"{h}.{p}.{s}{'=' * (-len(s) % 4)}"
    assert alias != refresh_token(spent)
    replay = await arena.refresh_with(alias, spent.csrf or "")
    check_refusal(replay, [401], "padded alias of a spent refresh token")
    assert await family_of(arena, spent) is None, "the alias was not seen as a replay"


@STATEFUL
async def test_concurrent_refreshes_with_one_token_succeed_at_most_once(
    config: str, open_arena: ArenaFactory
) -> None:
    """Two (then eight) simultaneous refreshes of one token, on the Redis and the Postgres
    family store: never two new pairs."""
    arena = await open_arena(config)
    for attempt in range(10):
        cred = await arena.login(2 + attempt % 5)
        replies = await asyncio.gather(spend(arena, cred), spend(arena, cred))
        wins = [r for r in replies if r.status == 200]
        assert len(wins) <= 1, f"attempt {attempt}: {len(wins)} refreshes of one token succeeded"
        for r in replies:
            if r.status != 200:
                check_refusal(r, [401], f"attempt {attempt}: the losing refresh")
    cred = await arena.login(7)
    burst = await asyncio.gather(*(spend(arena, cred) for _ in range(8)))
    assert sum(r.status == 200 for r in burst) <= 1, [r.status for r in burst]
    assert all(r.status in (200, 401) for r in burst), [r.status for r in burst]


@pytest.mark.parametrize("config", JWT_CONFIGS)
async def test_refresh_and_access_tokens_are_not_interchangeable(
    config: str, open_arena: ArenaFactory
) -> None:
    """The victim's refresh token does not open /me, its access token does not refresh, and
    neither attempt harms the family."""
    arena = await open_arena(config)
    victim = arena.victim
    refresh, access = refresh_token(victim), access_token(victim)

    async def refresh_as_access() -> Reply:
        return await arena.me_with(refresh)

    async def access_as_refresh() -> Reply:
        return await arena.refresh_with(access, victim.csrf or "")

    reply = await assert_refused(arena, refresh_as_access, 401, "refresh token on /me")
    assert reply.body["error"] == "invalid_token"
    reply = await assert_refused(arena, access_as_refresh, 401, "access token on /refresh")
    assert reply.body["error"] == "invalid_grant"
    reply, _ = await arena.client.refresh(victim)
    assert reply.status == 200, f"the family was harmed: {reply.body}"


@STATEFUL
async def test_logout_ends_the_refresh_family(config: str, open_arena: ArenaFactory) -> None:
    """After logout the family's refresh token is invalid_grant and the family record is gone."""
    arena = await open_arena(config)
    cred = arena.victim
    reply, cred = await arena.client.refresh(cred)
    assert reply.status == 200
    assert await family_of(arena, cred) is not None
    assert (await arena.client.logout(cred)).status == 204
    assert await family_of(arena, cred) is None, "the family record outlived logout"
    after = await spend(arena, cred)
    check_refusal(after, [401], "refresh after logout")
    assert after.body["error"] == "invalid_grant"


HOSTILE_IDS = [
    "' OR '1'='1",
    "x'; DELETE FROM refresh_families; --",
    "*",
    "fam:*",
    "a b\r\nFLUSHALL",
]


@STATEFUL
async def test_hostile_family_and_jti_values_stay_data(
    config: str, open_arena: ArenaFactory
) -> None:
    """Signed tokens whose `fam`/`jti` spell SQL, globs or protocol commands touch only the
    record of that exact literal: other families survive (parameterised SQL, literal keys)."""
    arena = await open_arena(config)
    assert arena.probes.families is not None
    victim_family = await family_of(arena, arena.victim)
    assert victim_family is not None
    attacks: list[tuple[str, Send]] = []
    for value in HOSTILE_IDS:
        # A hostile jti goes with an unknown family: in the victim's family any other jti is
        # a replay, which rightly revokes the family.
        for changes in ({"fam": value}, {"fam": "no-such-family", "jti": value}):
            payload = claims(arena, "refresh", **changes)
            token = forge(arena, "refresh", payload=payload)
            send = partial(arena.refresh_with, token, arena.victim.csrf or "")
            attacks.append((f"refresh with {changes}", send))
    await assert_all_refused(arena, attacks, 401)
    assert await family_of(arena, arena.victim) == victim_family
    if arena.probes.denylist is not None:
        # Logout writes the denylist under the token's jti: the literal, and nothing else.
        # (Unique per test: the stores are shared by every test of the run.)
        other = await arena.login(2)
        jti = f"{HOSTILE_IDS[0]} {secrets.token_hex(4)}"
        hostile = claims(arena, jti=jti, fam=HOSTILE_IDS[0])
        headers = {**arena.access_headers(forge(arena, payload=hostile))}
        headers["X-CSRF-Token"] = str(hostile.get("csrf", ""))
        reply = await arena.client.request("POST", "/logout", headers=headers)
        assert reply.status == 204, reply.body
        assert await arena.probes.denylist.is_denied(jti)
        assert (await arena.client.me(arena.victim)).status == 200
        assert (await arena.client.me(other)).status == 200
