"""Starting what one configuration needs: its stores (shared across a run) and its server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, cast
from urllib.parse import urlsplit

import asyncpg
import psutil
from redis import Redis

from loadtests.config import BenchConfigError, Configuration
from loadtests.resources import process_tree, stop_group
from loadtests.stores import ENV_VARS, StoreKind, StoreProcess, free_port, start_store
from servers.settings import Settings

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# A remote server is expected to be up already (compose waits for its health check).
REMOTE_READY_TIMEOUT = 30.0


class LaunchError(Exception):
    """Raised when a server does not come up; the message carries its log's tail."""


def pin(pids: list[int], cores: set[int] | None) -> None:
    """Restrict `pids` to `cores` (no-op when `cores` is None or a process is gone)."""
    if not cores:
        return
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            psutil.Process(pid).cpu_affinity(sorted(cores))


class StorePool:
    """Stores started on demand, one per (kind, knobs), kept for the whole run.

    A kind whose URL is in the environment is used as it is (external: never started,
    never flushed by us, and its CPU is not ours to account).
    """

    def __init__(self, workdir: Path, cores: set[int] | None) -> None:
        self._workdir = workdir
        self._cores = cores
        self._stores: dict[tuple[str, str], StoreProcess] = {}

    def __enter__(self) -> StorePool:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every store this pool started."""
        for store in self._stores.values():
            store.stop()
        self._stores.clear()

    def acquire(self, config: Configuration) -> dict[str, StoreProcess | str]:
        """Return {kind: running StoreProcess, or the external URL} for the configuration.

        Raises StoreNotAvailable / StoreStartError from the launcher.
        """
        out: dict[str, StoreProcess | str] = {}
        for kind in config.store_kinds():
            external = os.environ.get(ENV_VARS[cast(StoreKind, kind)])
            if external:
                out[kind] = external
                continue
            knobs = dict(config.stores.get(kind, {}))
            key = (kind, json.dumps(knobs, sort_keys=True))
            store = self._stores.get(key)
            if store is None or not store.running:
                tag = hashlib.sha256(key[1].encode()).hexdigest()[:8]
                store = start_store(
                    cast(StoreKind, kind), self._workdir / f"{kind}-{tag}", settings=knobs
                )
                self._stores[key] = store
            pin(store.pids(), self._cores)
            out[kind] = store
        return out

    def versions(self) -> dict[str, str]:
        """Return {kind: version} of the stores started so far."""
        return {store.kind: store.version() for store in self._stores.values()}


def store_env(stores: Mapping[str, StoreProcess | str]) -> dict[str, str]:
    """Return DATABASE_URL / REDIS_URL / MEMCACHED_URL for the acquired stores."""
    return {
        ENV_VARS[cast(StoreKind, kind)]: s if isinstance(s, str) else s.url
        for kind, s in stores.items()
    }


def flush(stores: Mapping[str, StoreProcess | str]) -> None:
    """Empty the stores we own, so one configuration never sees another's records."""
    for kind, store in stores.items():
        if isinstance(store, str):
            continue
        if kind == "redis":
            with Redis.from_url(store.url) as r:
                r.flushall()
        elif kind == "memcached":
            _memcached_flush(store.url)
        elif kind == "postgres":
            asyncio.run(_postgres_flush(store.url))


def _memcached_flush(url: str) -> None:
    import socket

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 11211), 5) as s:
        s.sendall(b"flush_all\r\n")
        s.recv(64)


async def _postgres_flush(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        # The checkpoint writes out what the last configuration left dirty, so that write-back
        # does not land in the next one's measurement window.
        await conn.execute(
            "DROP TABLE IF EXISTS sessions, jti_denylist, refresh_families; "
            "SELECT pg_stat_reset(); CHECKPOINT;"
        )
    finally:
        await conn.close()


class Server(Protocol):
    """What the runner needs of a server under test, started by it or not."""

    base_url: str
    settings: Settings

    def pids(self) -> list[int]:
        """Return the server's pids on this machine (none for a remote server)."""
        ...


@dataclass
class ServerProcess:
    """A running `python -m servers` and what it was started with."""

    proc: subprocess.Popen[bytes]
    base_url: str
    settings: Settings
    log_path: Path | None

    def pids(self) -> list[int]:
        """Return the server's pids (the supervisor and its workers)."""
        return process_tree(self.proc.pid)


def _preexec(cores: set[int] | None) -> None:
    if cores:
        os.sched_setaffinity(0, cores)


@contextlib.contextmanager
def run_server(
    config: Configuration,
    env: Mapping[str, str],
    *,
    cores: set[int] | None,
    log_path: Path | None,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """Start the configuration's server on loopback (a free port by default); stop it on exit.

    Output goes to `log_path`, or to this terminal when None. Raises BenchConfigError for bad
    options and LaunchError if it does not become healthy.
    """
    port = port or free_port()
    argv = [*config.server_argv(), "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, **env}
    settings = config.settings(full_env)
    log: IO[bytes] | None = log_path.open("wb") if log_path else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers", *argv],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        preexec_fn=(lambda: _preexec(cores)) if cores else None,
        start_new_session=True,
    )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", settings, log_path)
    try:
        _wait_healthy(server)
        yield server
    finally:
        stop_group(proc, signal.SIGTERM, STOP_TIMEOUT)
        if log:
            log.close()


def _wait_healthy(server: ServerProcess) -> None:
    def exited() -> str | None:
        code = server.proc.poll()
        return None if code is None else f"server exited with {code}: {_tail(server)}"

    reason = wait_healthy(server.base_url, READY_TIMEOUT, exited)
    if reason:
        raise LaunchError(reason if "exited" in reason else f"{reason}: {_tail(server)}")


def wait_healthy(
    base_url: str, timeout: float, gone: Callable[[], str | None] = lambda: None
) -> str | None:
    """Poll `base_url`/health until it answers 200; return None then, else why not.

    `gone` is asked between attempts and returns a reason to give up (a process that exited).
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        reason = gone()
        if reason:
            return reason
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return None
        except urllib.error.HTTPError as exc:
            last = f"/health answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(0.1)
    return f"server at {base_url} not healthy after {timeout:.0f} s ({last})"


@dataclass
class RemoteServer:
    """A server the runner did not start: its address and the Settings of its configuration."""

    base_url: str
    settings: Settings

    def pids(self) -> list[int]:
        """Return no pids: the server's processes are not on this machine, or not ours."""
        return []


def check_server_url(url: str) -> str:
    """Return `url` without a trailing slash; raises BenchConfigError unless it is http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchConfigError(f"--server-url {url!r}: expected http://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BenchConfigError(f"--server-url {url!r}: give the server's root, without a path")
    return url.rstrip("/")


def remote_store_env(config: Configuration, env: Mapping[str, str]) -> dict[str, str]:
    """Return the store locations in `env` that verifying `config` on a remote server needs.

    Verification looks into the stores themselves (a login's record exists, a logout's is
    gone), so each store the configuration uses must be named; session-file needs the
    server's session directory (a shared mount). Raises BenchConfigError naming what is missing.
    """
    needed = [ENV_VARS[cast(StoreKind, kind)] for kind in config.store_kinds()]
    if config.backend == "session-file":
        needed.append("SESSION_DIR")
    missing = [var for var in needed if not env.get(var)]
    if missing:
        flags = " / ".join(f"--{v.lower().replace('_', '-')}" for v in missing)
        raise BenchConfigError(
            f"--server-url: verifying {config.name!r} looks into its stores; "
            f"set {' '.join(missing)} (or {flags}) to where the remote server keeps them"
        )
    return {var: env[var] for var in needed}


def connect_remote(config: Configuration, base_url: str, env: Mapping[str, str]) -> RemoteServer:
    """Return the remote server at `base_url` once /health answers 200.

    Raises LaunchError if it does not within REMOTE_READY_TIMEOUT, BenchConfigError if the
    configuration's options are invalid.
    """
    settings = config.settings(env)
    reason = wait_healthy(base_url, REMOTE_READY_TIMEOUT)
    if reason:
        raise LaunchError(reason)
    return RemoteServer(base_url, settings)


def _tail(server: ServerProcess, lines: int = 5) -> str:
    if server.log_path is None:
        return "(see its output above)"
    try:
        text = server.log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
