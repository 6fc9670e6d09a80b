"""Real stores for the whole session, and in-process servers on real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from loadtests.client import AuthClient
from loadtests.stores import StoreNotAvailable, StoreSet, find_binary
from servers.app import create_app
from servers.keyring import with_generated_keys
from servers.serve import make_runner
from servers.settings import Settings

# Every backend configuration the suites run against: (id, Settings fields).
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("session-file", {"backend": "session-file"}),
    ("session-postgres", {"backend": "session-postgres"}),
    ("session-redis", {"backend": "session-redis"}),
    ("session-memcached", {"backend": "session-memcached"}),
    ("session-redis-sliding", {"backend": "session-redis", "sliding": True}),
    *[
        (f"jwt-{alg}", {"backend": "jwt", "alg": alg})
        for alg in ("HS256", "RS256", "ES256", "EdDSA")
    ],
    ("jwt-cookie", {"backend": "jwt", "transport": "cookie"}),
    ("jwt-refresh-postgres", {"backend": "jwt", "refresh_store": "postgres"}),
    ("jwt-stateless", {"backend": "jwt", "refresh_store": "none"}),
    *[
        (f"jwt-denylist-{alg}", {"backend": "jwt-denylist", "alg": alg})
        for alg in ("HS256", "RS256", "ES256", "EdDSA")
    ],
    ("jwt-denylist-postgres", {"backend": "jwt-denylist", "denylist_store": "postgres"}),
    ("jwt-denylist-cookie", {"backend": "jwt-denylist", "transport": "cookie"}),
]
CONFIG_IDS = [c[0] for c in CONFIGS]
CONFIG_FIELDS = dict(CONFIGS)


@pytest.fixture(scope="session")
def stores() -> Iterator[StoreSet]:
    """Real PostgreSQL, Redis and (where installed) memcached, torn down at the end."""
    kinds: list[Any] = ["postgres", "redis"]
    try:
        find_binary("memcached")
        kinds.append("memcached")
    except StoreNotAvailable:
        pass
    with StoreSet(kinds) as store_set:
        yield store_set


@pytest.fixture
def make_settings(stores: StoreSet, tmp_path: Path) -> Callable[..., Settings]:
    """Return a builder of validated Settings pointing at the session's stores."""
    urls = stores.urls

    def build(**fields: Any) -> Settings:
        if fields.get("backend") == "session-memcached" and "memcached" not in urls:
            pytest.skip("memcached is not installed here (apt-get install memcached)")
        base: dict[str, Any] = {
            "users": 10,
            "database_url": urls.get("postgres"),
            "redis_url": urls.get("redis"),
            "memcached_url": urls.get("memcached"),
            "session_dir": tmp_path / "sessions",
        }
        return with_generated_keys(Settings(**{**base, **fields}).check())

    return build


ServeFn = Callable[[Settings], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """Return a starter of real servers on free loopback ports; all are stopped afterwards."""
    runners: list[web.AppRunner] = []

    async def start(settings: Settings) -> str:
        runner = make_runner(create_app(settings))
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session with a bounded timeout."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
async def client_for(
    serve: ServeFn, http: aiohttp.ClientSession
) -> Callable[[Settings], Awaitable[AuthClient]]:
    """Return a function that serves `settings` and gives an AuthClient onto it."""

    async def build(settings: Settings) -> AuthClient:
        return AuthClient(http, await serve(settings))

    return build
