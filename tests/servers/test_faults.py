"""Store faults against real store processes: 503 + Retry-After while down, recovery after.

The module starts its own PostgreSQL, Redis and memcached (the session-wide ones are shared
with every other test and must never be stopped), stops and restarts them under a live
server, and checks the HTTP contract: requests that need the store answer 503 with
`Retry-After` and the `store_unavailable` body, `/health` is 503, stateless JWT `/me` keeps
working, and the server recovers by itself once the store is back. A client timeout turns a
hang into a failure; nothing here asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from loadtests.client import AuthClient, Credential, Reply
from loadtests.stores import StoreKind, StoreProcess, StoreSet, free_port
from servers.errors import StoreUnavailable
from servers.settings import Settings
from servers.stores import SessionRecord
from servers.stores import memcached as mc_store
from tests.conftest import ServeFn

REPO = Path(__file__).resolve().parents[2]
HAS_MEMCACHED = shutil.which("memcached") is not None
needs_memcached = pytest.mark.skipif(
    not HAS_MEMCACHED, reason="memcached binary not on PATH (apt-get install memcached)"
)
# A hang fails the test at this bound instead of hanging it; the server's own bound is lower.
CLIENT_TIMEOUT = 5.0
RECOVERY_TIMEOUT = 15.0
POOL_SIZE = 4
# More concurrent requests than pool connections: waiting for a slot must be bounded too.
BURST = 3 * POOL_SIZE
T = TypeVar("T")


@dataclass(frozen=True)
class FaultCase:
    """One configuration, the store stopped under it, and what that store's loss means."""

    fields: dict[str, Any]
    store: StoreKind
    me_needs_store: bool = True
    """False for stateless JWT: `/me` checks a signature only and must stay 200."""
    store_keeps_data: bool = False
    """PostgreSQL persists across a restart; Redis (no save) and memcached start empty."""
    marks: list[pytest.MarkDecorator] = field(default_factory=list)


FAULT_CASES: dict[str, FaultCase] = {
    "session-redis": FaultCase({"backend": "session-redis"}, "redis"),
    "session-postgres": FaultCase(
        {"backend": "session-postgres"}, "postgres", store_keeps_data=True
    ),
    "session-memcached": FaultCase(
        {"backend": "session-memcached"}, "memcached", marks=[needs_memcached]
    ),
    "jwt-denylist-redis": FaultCase(
        {"backend": "jwt-denylist", "denylist_store": "redis", "refresh_store": "redis"}, "redis"
    ),
    "jwt-denylist-postgres": FaultCase(
        {"backend": "jwt-denylist", "denylist_store": "postgres", "refresh_store": "postgres"},
        "postgres",
        store_keeps_data=True,
    ),
    "jwt-refresh-redis": FaultCase(
        {"backend": "jwt", "refresh_store": "redis"}, "redis", me_needs_store=False
    ),
    "jwt-refresh-postgres": FaultCase(
        {"backend": "jwt", "refresh_store": "postgres"},
        "postgres",
        me_needs_store=False,
        store_keeps_data=True,
    ),
}
FAULT_PARAMS = [pytest.param(case, id=name, marks=case.marks) for name, case in FAULT_CASES.items()]
FROZEN_PARAMS = [
    pytest.param(name, id=name, marks=FAULT_CASES[name].marks)
    for name in ("session-redis", "session-postgres", "session-memcached")
]


@pytest.fixture(scope="module")
def own_stores() -> Iterator[StoreSet]:
    """Stores of this module alone (never the environment's), so stopping them harms no one."""
    kinds: list[StoreKind] = ["postgres", "redis"]
    if HAS_MEMCACHED:
        kinds.append("memcached")
    with StoreSet(kinds, use_env=False) as store_set:
        yield store_set


@pytest.fixture
def running_stores(own_stores: StoreSet) -> Iterator[StoreSet]:
    """The module's stores, each running again after the test, however the test ended."""
    yield own_stores
    for proc in own_stores.processes.values():
        _resume(proc)
        proc.start()


@pytest.fixture
def fault_settings(
    make_settings: Callable[..., Settings], running_stores: StoreSet
) -> Callable[..., Settings]:
    """Return a Settings builder pointing at this module's own stores, with a small pool."""
    urls = running_stores.urls

    def build(**fields: Any) -> Settings:
        return make_settings(
            database_url=urls["postgres"],
            redis_url=urls["redis"],
            memcached_url=urls.get("memcached"),
            pool_size=POOL_SIZE,
            **fields,
        )

    return build


@pytest.fixture
async def bounded_http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that gives up after CLIENT_TIMEOUT, so a hanging server fails the test."""
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def answered(call: Awaitable[T], what: str) -> T:
    """Return the call's result; fail the test if the server did not answer in time."""
    try:
        return await call
    except TimeoutError:
        pytest.fail(f"{what}: no response within the {CLIENT_TIMEOUT:.0f} s client timeout")


def assert_unavailable(reply: Reply, what: str) -> None:
    """The contract's answer while a store is down: 503, Retry-After, the JSON error body."""
    assert reply.status == 503, f"{what}: {reply.status} {reply.body}"
    assert reply.headers.get("Retry-After", "").isdigit(), f"{what}: {reply.headers}"
    assert isinstance(reply.body, dict), f"{what}: {reply.body!r}"
    assert reply.body.get("error") == "store_unavailable", f"{what}: {reply.body}"
    assert isinstance(reply.body.get("detail"), str), f"{what}: {reply.body}"


async def login(client: AuthClient, user: int) -> Credential:
    """Log `user<user>` in and return the credential; fails the test otherwise."""
    reply, cred = await answered(client.login(f"user{user}", f"secret-{user}"), "login")
    assert reply.status == 200 and cred is not None, f"login: {reply.status} {reply.body}"
    return cred


async def burst(client: AuthClient, path: str, cred: Credential | None = None) -> list[int]:
    """Send BURST concurrent GETs of `path` and return their statuses."""
    headers = cred.headers() if cred else None
    calls = [client.request("GET", path, headers=headers) for _ in range(BURST)]
    replies = await answered(asyncio.gather(*calls), f"burst of GET {path}")
    return [r.status for r in replies]


async def wait_healthy(client: AuthClient) -> None:
    """Poll /health until 200; fail the test if the server does not recover by itself."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECOVERY_TIMEOUT
    last: Reply | None = None
    while loop.time() < deadline:
        last = await answered(client.request("GET", "/health"), "health while recovering")
        if last.status == 200:
            return
        await asyncio.sleep(0.2)
    assert last is not None
    pytest.fail(f"/health still {last.status} {last.body} {RECOVERY_TIMEOUT:.0f} s after restart")


def _signal_store(proc: StoreProcess, sig: int) -> None:
    for pid in proc.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _resume(proc: StoreProcess) -> None:
    _signal_store(proc, signal.SIGCONT)


@pytest.mark.parametrize("case", FAULT_PARAMS)
async def test_store_outage_is_503_and_the_server_recovers(
    case: FaultCase,
    fault_settings: Callable[..., Settings],
    running_stores: StoreSet,
    serve: ServeFn,
    bounded_http: aiohttp.ClientSession,
) -> None:
    settings = fault_settings(**case.fields)
    client = AuthClient(bounded_http, await serve(settings))
    store = running_stores.process(case.store)

    cred = await login(client, 1)
    assert (await answered(client.me(cred), "me")).status == 200
    # Fill the pool, so the restart leaves dead connections in it for the server to notice.
    assert set(await burst(client, "/health")) == {200}

    # stop() blocks the event loop, so the server meets the store's hang-ups and the next
    # request in one loop turn: the race in which a half-closed connection is still pooled.
    store.stop()

    me = await answered(client.me(cred), "me while down")
    if case.me_needs_store:
        assert_unavailable(me, "GET /me")
    else:
        assert me.status == 200, f"stateless /me while its refresh store is down: {me.body}"
    assert_unavailable(await answered(client.logout(cred), "logout while down"), "POST /logout")
    reply, _ = await answered(client.refresh(cred), "refresh while down")
    assert_unavailable(reply, "POST /refresh")
    reply, _ = await answered(client.login("user2", "secret-2"), "login while down")
    assert_unavailable(reply, "POST /login")
    assert_unavailable(await answered(client.request("GET", "/health"), "health"), "GET /health")
    assert set(await burst(client, "/health")) == {503}
    assert (await answered(client.request("GET", "/public"), "public")).status == 200

    store.start()
    await wait_healthy(client)

    # Every pooled connection died with the store; none may surface as a 503 now.
    assert set(await burst(client, "/health")) == {200}
    kept = 200 if case.store_keeps_data else 401
    me = await answered(client.me(cred), "me after restart")
    # A JWT access token outlives the store (the denylist starts empty); a session does not.
    assert me.status == (200 if settings.is_jwt else kept), me.body
    reply, _ = await answered(client.refresh(cred), "refresh after restart")
    assert reply.status == kept, reply.body

    fresh = await login(client, 3)
    assert set(await burst(client, "/me", fresh)) == {200}
    assert (await answered(client.logout(fresh), "logout after restart")).status == 204
    reply, _ = await answered(client.refresh(fresh), "refresh after logout")
    assert reply.status == 401, reply.body


@pytest.mark.parametrize("name", FROZEN_PARAMS)
async def test_frozen_store_is_503_and_its_late_replies_are_not_misread(
    name: str,
    fault_settings: Callable[..., Settings],
    running_stores: StoreSet,
    serve: ServeFn,
    bounded_http: aiohttp.ClientSession,
) -> None:
    """A store that accepts but never answers (SIGSTOP) is cut off by the store timeout, and
    the replies it sends once resumed are never read as answers to later requests."""
    case = FAULT_CASES[name]
    client = AuthClient(bounded_http, await serve(fault_settings(**case.fields)))
    store = running_stores.process(case.store)
    alice, bob = await login(client, 4), await login(client, 5)

    _signal_store(store, signal.SIGSTOP)
    try:
        assert_unavailable(await answered(client.me(alice), "me while frozen"), "GET /me")
        assert_unavailable(await answered(client.request("GET", "/health"), "health"), "/health")
        assert set(await burst(client, "/me", alice)) == {503}
    finally:
        _resume(store)

    # The store now answers the timed-out reads of alice's session; on a connection that went
    # back to the pool, bob's request would read one of those as its own answer.
    for _ in range(POOL_SIZE + 1):
        me = await answered(client.me(bob), "me after resume")
        assert me.status == 200 and me.body["username"] == "user5", me.body
    await wait_healthy(client)
    assert set(await burst(client, "/me", alice)) == {200}


# --- memcached faults a real server cannot be made to produce on cue ------------------------

FAKE_TIMEOUT = 0.3


def _record(user_id: int) -> SessionRecord:
    now = time.time()
    return SessionRecord(user_id=user_id, created=now, expires=now + 60)


@contextlib.asynccontextmanager
async def fake_memcached(
    answer: Callable[[bytes], Awaitable[bytes | None]],
) -> AsyncIterator[Settings]:
    """Serve memcached's text protocol from `answer(command line)`: None hangs up unanswered.

    Yields Settings for a session-memcached server on it (one pooled connection).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if line.startswith((b"set ", b"replace ")):
                    await reader.readline()  # the data block
                reply = await answer(line)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up on this connection, as it should after a timeout
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield Settings(
            backend="session-memcached",
            memcached_url=f"memcached://127.0.0.1:{port}",
            store_timeout=FAKE_TIMEOUT,
            pool_size=1,
        )


@pytest.mark.timeout(30)  # the failure this guards against froze the event loop for good
async def test_memcached_hanging_up_mid_command_is_503_not_a_frozen_loop() -> None:
    async def answer(line: bytes) -> bytes | None:
        return b"VERSION fake\r\n" if line.startswith(b"version") and not served else None

    served = False
    async with fake_memcached(answer) as settings, mc_store.open_client(settings) as mc:
        served = True  # from now on every command is met by a hang-up
        store = mc_store.MemcachedSessionStore(mc, settings.store_timeout)
        calls: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            lambda: store.put("a" * 43, _record(1)),
            lambda: store.touch("a" * 43, _record(1)),
            lambda: store.take("a" * 43),
            lambda: store.get("a" * 43),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await call()


async def test_memcached_reply_after_a_timeout_is_not_read_by_the_next_command() -> None:
    late_reply_sent = asyncio.Event()
    records = {b"sess:" + b"a" * 43: _record(1), b"sess:" + b"b" * 43: _record(2)}

    async def answer(line: bytes) -> bytes | None:
        if line.startswith(b"version"):
            return b"VERSION fake\r\n"
        key = line.split()[1]
        if key == b"sess:" + b"a" * 43 and not late_reply_sent.is_set():
            await asyncio.sleep(2 * FAKE_TIMEOUT)
            asyncio.get_running_loop().call_soon(late_reply_sent.set)
        data = records[key].encode()
        return b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(data), data)

    async with fake_memcached(answer) as settings, mc_store.open_client(settings) as mc:
        store = mc_store.MemcachedSessionStore(mc, settings.store_timeout)
        with pytest.raises(StoreUnavailable):
            await store.get("a" * 43)
        await asyncio.wait_for(late_reply_sent.wait(), CLIENT_TIMEOUT)
        record = await store.get("b" * 43)
        assert record is not None and record.user_id == 2, record


# --- start-up: a wrong flag or an unreachable store is one line and a non-zero exit ---------


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """Yield a port that accepts TCP connections (in the kernel backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def run_server(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m servers ARGS` with no store URLs in its environment; bounded at 30 s."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "MEMCACHED_URL"}
    }
    cmd = [sys.executable, "-m", "servers", "--users", "2", "--port", str(free_port()), *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)


def assert_one_line_failure(done: subprocess.CompletedProcess[str]) -> None:
    """A start-up failure is a non-zero exit and exactly one line on stderr, no traceback."""
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr


STORE_FLAGS: list[Any] = [
    pytest.param("session-redis", "--redis-url", "redis://127.0.0.1:{port}/0", id="redis"),
    pytest.param(
        "session-postgres",
        "--database-url",
        "postgresql://postgres@127.0.0.1:{port}/authbench",
        id="postgres",
    ),
    pytest.param(
        "session-memcached", "--memcached-url", "memcached://127.0.0.1:{port}", id="memcached"
    ),
    pytest.param(
        "jwt-denylist", "--redis-url", "redis://127.0.0.1:{port}/0", id="jwt-denylist-redis"
    ),
]


@pytest.mark.parametrize(("backend", "flag", "url"), STORE_FLAGS)
def test_start_up_with_a_closed_store_port_is_one_line(backend: str, flag: str, url: str) -> None:
    done = run_server("--backend", backend, flag, url.format(port=free_port()))
    assert_one_line_failure(done)
    assert "cannot reach" in done.stderr


@pytest.mark.parametrize(("backend", "flag", "url"), STORE_FLAGS)
def test_start_up_with_a_silent_store_is_one_line(backend: str, flag: str, url: str) -> None:
    with silent_listener() as port:
        done = run_server(
            "--backend", backend, "--store-timeout", "0.5", flag, url.format(port=port)
        )
    assert_one_line_failure(done)
    assert "cannot reach" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--backend", "nope"], id="unknown-backend"),
        pytest.param(["--backend", "session-redis", "--no-such-flag"], id="unknown-flag"),
        pytest.param(["--backend", "session-redis"], id="missing-store-url"),
        pytest.param(
            ["--backend", "session-redis", "--redis-url", "redis://x", "--store-timeout", "0"],
            id="bad-value",
        ),
        pytest.param(["--backend", "session-redis", "--redis-url", "nope"], id="bad-redis-url"),
        pytest.param(
            ["--backend", "session-memcached", "--memcached-url", "memcached://h:99999"],
            id="bad-memcached-url",
        ),
        pytest.param(
            ["--backend", "session-postgres", "--database-url", "nope"], id="bad-postgres-url"
        ),
    ],
)
def test_start_up_with_a_wrong_flag_is_one_line(args: list[str]) -> None:
    assert_one_line_failure(run_server(*args))
