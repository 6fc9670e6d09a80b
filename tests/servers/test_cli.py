"""`python -m servers` as a real process: one-line errors, serving, workers, clean shutdown."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from loadtests.stores import ENV_VARS, StoreSet, free_port

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0
EXIT_TIMEOUT = 10.0
STORE_VARS = (
    *ENV_VARS.values(),
    "SESSION_DIR",
    "JWT_SECRET",
    "JWT_PRIVATE_KEY",
    "JWT_PREVIOUS_SECRETS",
    "JWT_PREVIOUS_PRIVATE_KEYS",
)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any store or key setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in STORE_VARS}
    return {**env, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m servers ARGS` to completion (it is expected to fail fast)."""
    return subprocess.run(
        [sys.executable, "-m", "servers", *args],
        cwd=ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], status: int) -> str:
    assert done.returncode == status, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


@contextlib.contextmanager
def server(*args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Start `python -m servers ARGS`; on the way out kill it and any worker still alive."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    family: list[psutil.Process] = []
    try:
        yield proc
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            family = psutil.Process(proc.pid).children(recursive=True)
        if proc.poll() is None:
            proc.kill()
        for child in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        proc.communicate(timeout=EXIT_TIMEOUT)


def get(
    port: int, path: str, conn: http.client.HTTPConnection | None = None
) -> tuple[int, dict[str, Any]]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        if own:
            conn.close()


def post_login(conn: http.client.HTTPConnection, username: str, password: str) -> int:
    body = json.dumps({"username": username, "password": password})
    conn.request("POST", "/login", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    """Return once /health answers 200; fail with the server's stderr if it dies or never does."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {proc.communicate()[1]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(port, "/health")[0] == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"server not ready on port {port} within {READY_TIMEOUT} s")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM the server; return its exit status and stderr once it has exited."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=EXIT_TIMEOUT)
    return proc.returncode, err


# --- errors before serving ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (("--backend", "jwt", "--bogus"), "unrecognized arguments: --bogus"),
        (("--backend", "session-mongo"), "invalid choice: 'session-mongo'"),
        (("--backend", "jwt", "--alg", "HS512"), "invalid choice: 'HS512'"),
        (("--backend", "jwt", "--workers", "two"), "invalid int value: 'two'"),
        ((), "the following arguments are required: --backend"),
    ],
    ids=["unknown-flag", "unknown-backend", "bad-alg", "bad-int", "no-backend"],
)
def test_bad_flags_exit_2_with_one_line(args: tuple[str, ...], mentions: str) -> None:
    line = assert_one_line_error(run_cli(*args), 2)
    assert mentions in line


@pytest.mark.parametrize(
    ("backend", "var"),
    [
        ("session-redis", "REDIS_URL"),
        ("session-postgres", "DATABASE_URL"),
        ("session-memcached", "MEMCACHED_URL"),
        ("session-file", "SESSION_DIR"),
        ("jwt", "REDIS_URL"),
    ],
)
def test_a_missing_store_url_exits_1_with_one_line(backend: str, var: str) -> None:
    line = assert_one_line_error(run_cli("--backend", backend), 1)
    assert line.startswith(f"authbench: {backend}") and var in line


def test_a_config_rule_broken_by_flags_exits_1_with_one_line(tmp_path: Path) -> None:
    done = run_cli("--backend", "session-file", "--session-dir", str(tmp_path), "--users", "0")
    assert assert_one_line_error(done, 1) == "authbench: --users must be positive"


def test_an_unreadable_key_file_exits_1_with_one_line(tmp_path: Path) -> None:
    env = clean_env(JWT_PRIVATE_KEY=str(tmp_path / "missing.pem"))
    done = run_cli("--backend", "jwt", "--alg", "RS256", "--refresh-store", "none", env=env)
    assert "cannot read key file" in assert_one_line_error(done, 1)


def test_an_unreachable_store_exits_1_with_one_line() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    done = run_cli("--backend", "session-redis", "--redis-url", dead, "--store-timeout", "0.5")
    assert assert_one_line_error(done, 1).startswith("authbench: ")


def test_a_port_in_use_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(
            *("--backend", "session-file", "--session-dir", str(tmp_path)),
            *("--port", str(port), "--users", "2"),
        )
    assert f"cannot listen on 127.0.0.1:{port}" in assert_one_line_error(done, 1)


# --- serving ------------------------------------------------------------------------------


def test_one_process_serves_the_contract_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    args = ("--backend", "session-file", "--session-dir", str(tmp_path), "--port", str(port))
    with server(*args, "--users", "5", env=clean_env()) as proc:
        wait_ready(proc, port)
        status, health = get(port, "/health")
        assert (status, health["status"], health["backend"]) == (200, "ok", "session-file")
        # Keep an idle keep-alive connection open across the SIGTERM, as a load generator would.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        assert post_login(conn, "user4", "secret-4") == 200
        assert post_login(conn, "user5", "secret-5") == 401  # only user0 … user4 exist
        status, err = stop(proc)
        conn.close()
    assert status == 0, err
    assert "Traceback" not in err


def worker_connections(workers: list[psutil.Process], port: int) -> dict[int, int]:
    """Established connections on `port`, counted per worker pid."""
    counts = {}
    for worker in workers:
        conns = worker.net_connections(kind="tcp")
        counts[worker.pid] = sum(
            1 for c in conns if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
        )
    return counts


def wait_workers(proc: subprocess.Popen[str], port: int, count: int) -> list[psutil.Process]:
    """Return the server's workers once `count` of them listen on `port`."""
    wait_ready(proc, port)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        workers: list[psutil.Process] = psutil.Process(proc.pid).children(recursive=True)
        listening = [
            w
            for w in workers
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in w.net_connections(kind="tcp")
            )
        ]
        if len(workers) == len(listening) == count:
            return workers
        time.sleep(0.1)
    pytest.fail(f"{count} workers not listening on port {port} within {READY_TIMEOUT} s")


@pytest.fixture
def redis_env(stores: StoreSet) -> dict[str, str]:
    if "redis" not in stores.urls:
        pytest.skip("no Redis")
    return clean_env(**stores.env())


def test_two_workers_share_the_port_and_all_stop_on_sigterm(redis_env: dict[str, str]) -> None:
    port = free_port()
    args = ("--backend", "session-redis", "--workers", "2", "--users", "5", "--port", str(port))
    with server(*args, env=redis_env) as proc:
        workers = wait_workers(proc, port, 2)
        # The kernel hands each connection to one worker; 32 open ones reach both unless
        # it sends every one to the same worker (chance 2**-31). They stay open, idle,
        # across the SIGTERM, as a load generator's would.
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(32)]
        try:
            for conn in conns:
                assert get(port, "/health", conn)[0] == 200
            served = worker_connections(workers, port)
            assert set(served) == {w.pid for w in workers}
            assert sum(served.values()) == 32 and all(served.values()), served
            status, err = stop(proc)
            _, alive = psutil.wait_procs(workers, timeout=EXIT_TIMEOUT)
        finally:
            for conn in conns:
                conn.close()
    assert status == 0, err
    assert alive == []
    assert "Traceback" not in err


def test_a_dead_worker_stops_the_server_with_status_1(redis_env: dict[str, str]) -> None:
    port = free_port()
    args = ("--backend", "session-redis", "--workers", "2", "--users", "5", "--port", str(port))
    with server(*args, env=redis_env) as proc:
        first, second = wait_workers(proc, port, 2)
        first.kill()
        _, err = proc.communicate(timeout=EXIT_TIMEOUT)
        _, alive = psutil.wait_procs([second], timeout=EXIT_TIMEOUT)
    assert proc.returncode == 1
    assert f"exited with -{signal.SIGKILL.value}" in err
    assert alive == []
