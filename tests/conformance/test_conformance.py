"""The contract, walked end to end against every backend with real stores.

The checks themselves live in `loadtests.verify`, so the bench runner's gate runs them too.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from loadtests.client import AuthClient
from loadtests.probes import open_probes
from loadtests.verify import CHECKS, Outcome, Target, run_check, verify
from servers.settings import Settings
from tests.conftest import CONFIG_FIELDS, CONFIG_IDS, ServeFn


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("config", CONFIG_IDS)
async def test_contract(
    config: str,
    check: str,
    make_settings: Callable[..., Settings],
    serve: ServeFn,
    http: aiohttp.ClientSession,
) -> None:
    settings = make_settings(**CONFIG_FIELDS[config])
    base = await serve(settings)
    async with open_probes(settings) as probes:
        result = await run_check(check, Target(AuthClient(http, base), settings, probes))
    if result.outcome is Outcome.SKIPPED:
        pytest.skip(result.detail)
    assert result.outcome is Outcome.PASSED, result.detail


async def test_full_walk_login_me_refresh_logout_me(
    make_settings: Callable[..., Settings], serve: ServeFn, http: aiohttp.ClientSession
) -> None:
    """The walk the issue names, in one sequence, on a session backend."""
    settings = make_settings(backend="session-postgres")
    client = AuthClient(http, await serve(settings))
    _, cred = await client.login("user7", "secret-7")
    assert cred is not None
    assert (await client.me(cred)).body["username"] == "user7"
    reply, cred = await client.refresh(cred)
    assert reply.status == 200
    assert (await client.logout(cred)).status == 204
    assert (await client.me(cred)).status == 401


async def test_verify_reports_every_check_against_a_live_server(
    make_settings: Callable[..., Settings], serve: ServeFn
) -> None:
    """`verify` (the runner's gate) passes a correct server and names every check."""
    settings = make_settings(backend="jwt-denylist", alg="ES256")
    results = await verify(await serve(settings), settings)
    assert [r.name for r in results] == list(CHECKS)
    assert {r.outcome for r in results} <= {Outcome.PASSED, Outcome.SKIPPED}


async def test_verify_fails_a_server_that_misreports_its_backend(
    make_settings: Callable[..., Settings], serve: ServeFn
) -> None:
    """The gate can fail: a server verified against the wrong settings does not pass."""
    actual = make_settings(backend="jwt")
    claimed = make_settings(backend="jwt-denylist")
    results = {r.name: r for r in await verify(await serve(actual), claimed)}
    assert results["health"].outcome is Outcome.FAILED
    assert results["logout"].outcome is Outcome.FAILED
