"""Real-process tests for loadtests.stores: real servers, real clients, real signals (no mocks)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiomcache
import asyncpg
import psutil
import pytest
import redis
import redis.asyncio as aioredis

import loadtests.stores as stores_module
from loadtests.stores import (
    ENV_VARS,
    StoreKind,
    StoreNotAvailable,
    StoreProcess,
    StoreSet,
    StoreStartError,
    start_store,
)

REPO = Path(__file__).resolve().parents[2]
HAS_MEMCACHED = shutil.which("memcached") is not None
needs_memcached = pytest.mark.skipif(
    not HAS_MEMCACHED, reason="memcached binary not on PATH (apt-get install memcached)"
)
ALL_KINDS: list[StoreKind] = ["postgres", "redis", "memcached"]
KIND_PARAMS = [pytest.param(k, marks=needs_memcached) if k == "memcached" else k for k in ALL_KINDS]


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


def all_gone(pids: list[int], timeout: float = 10.0) -> bool:
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    # A zombie is dead for our purposes (its reaper may simply not have run yet).
    return all(is_zombie(p) for p in alive)


def is_zombie(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def alive(store: StoreProcess) -> bool:
    # A function call, so mypy does not keep a narrowed `running` across stop()/start().
    return store.running


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[list[StoreProcess]]:
    started: list[StoreProcess] = []
    yield started
    for store in started:
        store.stop()


async def round_trip(store: StoreProcess, value: str) -> str | None:
    """Write then read ``value`` through the store's real client; returns what was read back."""
    if store.kind == "postgres":
        conn = await asyncpg.connect(store.url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            await conn.execute("CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY, v text)")
            if value:
                await conn.execute(
                    "INSERT INTO kv VALUES ('k', $1) ON CONFLICT (k) DO UPDATE SET v = $1", value
                )
            result: str | None = await conn.fetchval("SELECT v FROM kv WHERE k = 'k'")
            return result
        finally:
            await conn.close()
    if store.kind == "redis":
        client = aioredis.Redis.from_url(store.url, decode_responses=True)
        try:
            if value:
                await client.set("k", value)
            got: str | bytes | None = await client.get("k")
            return got if not isinstance(got, bytes) else got.decode()
        finally:
            await client.aclose()
    mc = aiomcache.Client(store.host, store.port)
    try:
        if value:
            await mc.set(b"k", value.encode())
        raw = await mc.get(b"k")
        return raw.decode() if raw is not None else None
    finally:
        await mc.close()


@pytest.mark.parametrize("kind", KIND_PARAMS)
async def test_start_round_trip_stop_restart(
    kind: StoreKind, tmp_path: Path, store_factory: list[StoreProcess]
) -> None:
    settings = {"fsync": "off", "max_connections": "50"} if kind == "postgres" else None
    store = start_store(kind, tmp_path, settings=settings)
    store_factory.append(store)
    assert alive(store) and store.host == "127.0.0.1"
    assert store.url.startswith(
        {"postgres": "postgresql://", "redis": "redis://"}.get(kind, "memcached://")
    )
    assert f"127.0.0.1:{store.port}" in store.url
    assert await round_trip(store, "hello") == "hello"
    pids = store.pids()
    assert pids and all(psutil.pid_exists(p) for p in pids)
    if kind == "postgres":
        assert len(pids) > 1, "postgres children (checkpointer, walwriter...) are counted"

    store.stop()
    assert not alive(store) and store.pids() == []
    assert refuses(store.port)
    assert all_gone(pids)
    store.stop()  # idempotent

    port = store.port
    store.start()
    assert store.port == port and alive(store) and store.pids()
    # Postgres keeps its data dir across restarts; redis/memcached are in-memory by design.
    assert await round_trip(store, "") == ("hello" if kind == "postgres" else None)
    assert await round_trip(store, "again") == "again"


@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_version(kind: StoreKind, tmp_path: Path, store_factory: list[StoreProcess]) -> None:
    store = start_store(kind, tmp_path)
    store_factory.append(store)
    prefix = {"postgres": "PostgreSQL 1", "redis": "Redis ", "memcached": "memcached 1."}[kind]
    assert store.version().startswith(prefix), store.version()


def test_postgres_settings_are_applied(tmp_path: Path, store_factory: list[StoreProcess]) -> None:
    store = start_store("postgres", tmp_path, settings={"max_connections": "37"})
    store_factory.append(store)
    assert store._psql("SHOW max_connections") == "37"


def test_start_error_includes_log_tail(tmp_path: Path) -> None:
    with pytest.raises(StoreStartError) as info:
        start_store("redis", tmp_path, settings={"no-such-directive": "1"})
    assert "no-such-directive" in str(info.value)
    assert not list(tmp_path.glob("**/*.pid"))


def test_start_store_retries_when_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_factory: list[StoreProcess]
) -> None:
    real_free_port = stores_module.free_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken: int = squatter.getsockname()[1]
        ports = iter([taken])  # the first pick loses the race, later ones are real
        monkeypatch.setattr(stores_module, "free_port", lambda: next(ports, 0) or real_free_port())
        store = start_store("redis", tmp_path)
        store_factory.append(store)
        assert store.port != taken and store.url == f"redis://127.0.0.1:{store.port}/0"
        assert "in use" in (tmp_path / "redis" / "redis.log").read_text()


def test_storeset_teardown_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)
    kinds: list[StoreKind] = ["postgres", "redis"]
    if HAS_MEMCACHED:
        kinds.append("memcached")
    with StoreSet(kinds, settings={"postgres": {"fsync": "off"}}) as stores:
        assert stores.workdir is not None and stores.workdir.is_dir()
        workdir = stores.workdir
        pids = [pid for proc in stores.processes.values() for pid in proc.pids()]
        assert set(stores.processes) == set(kinds) == set(stores.urls)
        assert set(stores.env()) == {ENV_VARS[k] for k in kinds}
    assert all_gone(pids, timeout=0.5), "stop() must have waited for every process"
    assert not workdir.exists()
    stores.close()  # idempotent


def test_storeset_cleans_up_on_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(RuntimeError), StoreSet(["redis"]) as stores:
        pids = stores.processes["redis"].pids()
        raise RuntimeError("boom")
    assert all_gone(pids, timeout=0.5)
    assert stores.workdir is None


def test_storeset_uses_external_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:6379/3")
    monkeypatch.delenv("MEMCACHED_URL", raising=False)
    with StoreSet(["redis"]) as stores:
        assert stores.urls == {"redis": "redis://example.invalid:6379/3"}
        assert stores.processes == {} and stores.pids("redis") == []
        with pytest.raises(LookupError, match="REDIS_URL"):
            stores.process("redis")
    with StoreSet(["redis"], use_env=False) as stores:
        assert stores.urls["redis"].startswith("redis://127.0.0.1:")


def test_cli_up_then_sigint() -> None:
    kinds = "postgres,redis" + (",memcached" if HAS_MEMCACHED else "")
    cli = subprocess.Popen(
        [sys.executable, "-m", "loadtests.stores", "up", "--kinds", kinds],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        exports = dict(
            shlex.split(cli.stdout.readline())[1].split("=", 1) for _ in kinds.split(",")
        )
        assert set(exports) == {ENV_VARS[k] for k in ALL_KINDS if k in kinds}
        assert exports["REDIS_URL"].startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(exports["REDIS_URL"])
        assert client.ping() and client.set("x", "1") and client.get("x") == b"1"
        client.close()
        pids = [p.pid for p in psutil.Process(cli.pid).children(recursive=True)]
        assert len(pids) >= 3
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=30) == 0
        assert "stores running" in (cli.stderr.read() if cli.stderr else "")
        assert all_gone(pids, timeout=0.5)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_missing_memcached_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no memcached anywhere
    with pytest.raises(StoreNotAvailable, match="apt-get install memcached"):
        start_store("memcached", tmp_path)


def test_cli_skips_missing_memcached_and_stops_on_sigterm(tmp_path: Path) -> None:
    cli = subprocess.Popen(
        [sys.executable, "-m", "loadtests.stores", "up", "--kinds", "redis,memcached"],
        cwd=REPO,
        env={**os.environ, "PATH": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None and cli.stderr is not None
        assert cli.stdout.readline().startswith("export REDIS_URL=redis://127.0.0.1:")
        assert "memcached" in cli.stderr.readline()  # the one-line warning comes first
        pids = [p.pid for p in psutil.Process(cli.pid).children(recursive=True)]
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0
        assert cli.stdout.read() == ""
        assert all_gone(pids, timeout=0.5)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_cli_bad_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.stores", "up", "--kinds", "oracle"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--kinds" in done.stderr


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_orphans_when_owner_dies(how: signal.Signals, tmp_path: Path) -> None:
    # SIGKILL: only PR_SET_PDEATHSIG can help. SIGTERM: our handler + atexit must stop them.
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from loadtests.stores import start_store
        stores = [start_store(k, Path({str(tmp_path)!r})) for k in ("postgres", "redis")]
        print(*(p for s in stores for p in s.pids()), flush=True)
        time.sleep(120)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE)
    servers: list[psutil.Process] = []
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        servers = [psutil.Process(p) for p in pids]
        assert len(servers) >= 2
        os.kill(owner.pid, how)
        code = owner.wait(timeout=30)
        # 128+15 (not -15) proves our SIGTERM handler turned the signal into SystemExit.
        assert code == (-9 if how == signal.SIGKILL else 128 + signal.SIGTERM)
        assert all_gone(pids, timeout=15)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for server in servers:  # never leave orphans behind, even when the test fails
            with contextlib.suppress(psutil.Error):
                server.kill()
