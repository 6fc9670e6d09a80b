"""How close is the server to the mechanism's own cost? Bare handlers against it, under wrk.

Each bare handler reads the credential, does the one store call or one PyJWT decode, and
returns JSON: the floor any server built on aiohttp pays. The real server's `GET /me` runs
next to it on the same stores, the server pinned to the first core and wrk to the second.

    python -m loadtests.baseline [--seconds 10] [--connections 32]    (needs `wrk` on PATH)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import jwt
import psutil
import uvloop
from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

from loadtests.launch import pin
from loadtests.stores import StoreSet, free_port

# A fixed key: the bare server and the seeding process must agree, and it guards nothing.
SECRET = hashlib.sha256(b"authbench-baseline").digest()
ISSUER, AUDIENCE = "authbench", "authbench-api"
USER = {"id": 1, "username": "user1", "role": "user"}
RECORD = b'{"u":1,"c":1.0,"e":99999999999.0}'


def _cookie(request: web.Request) -> str:
    return request.cookies.get("session_id", "")


def _bearer(request: web.Request) -> str:
    return request.headers.get("Authorization", "")[7:]


def _ok() -> web.Response:
    return web.json_response(USER)


def bare_app(kind: str, urls: dict[str, str], session_dir: Path) -> web.Application:
    """Return the minimal app for one mechanism (`GET /me` only)."""
    app = web.Application()
    state: dict[str, object] = {}

    async def none(request: web.Request) -> web.Response:
        return _ok()

    async def file(request: web.Request) -> web.Response:
        with open(session_dir / f"sess_{_cookie(request)}", "rb") as f:  # noqa: ASYNC230
            json.loads(f.read())
        return _ok()

    async def hs256(request: web.Request) -> web.Response:
        jwt.decode(_bearer(request), SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
        return _ok()

    async def redis(request: web.Request) -> web.Response:
        r = state["redis"]
        assert isinstance(r, Redis)
        record = await r.get(f"sess:{_cookie(request)}")
        assert record is not None
        json.loads(record)
        return _ok()

    async def denylist(request: web.Request) -> web.Response:
        claims = jwt.decode(
            _bearer(request), SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER
        )
        r = state["redis"]
        assert isinstance(r, Redis)
        if await r.exists(f"deny:{claims['jti']}"):
            raise web.HTTPUnauthorized()
        return _ok()

    async def postgres(request: web.Request) -> web.Response:
        pool = state["pg"]
        assert isinstance(pool, asyncpg.Pool)
        row = await pool.fetchrow(
            "SELECT user_id, created_at, expires_at FROM sessions "
            "WHERE id = $1 AND expires_at > $2",
            _cookie(request),
            time.time(),
        )
        assert row is not None
        return _ok()

    handlers: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
        "none": none,
        "session-file": file,
        "jwt": hs256,
        "session-redis": redis,
        "jwt-denylist": denylist,
        "session-postgres": postgres,
    }

    async def resources(app: web.Application):  # type: ignore[no-untyped-def]
        if kind in ("session-redis", "jwt-denylist"):
            # Blocking pool of 16, as the server's: more connections than that wait.
            pool = BlockingConnectionPool.from_url(urls["redis"], max_connections=16)
            state["redis"] = Redis(connection_pool=pool)
        if kind == "session-postgres":
            state["pg"] = await asyncpg.create_pool(urls["postgres"], min_size=1, max_size=16)
        yield
        if "redis" in state:
            await state["redis"].aclose()  # type: ignore[attr-defined]
        if "pg" in state:
            await state["pg"].close()  # type: ignore[attr-defined]

    app.cleanup_ctx.append(resources)
    app.router.add_get("/me", handlers[kind])
    return app


def serve_bare(kind: str, urls: dict[str, str], session_dir: Path, port: int) -> None:
    """Serve the bare app in this process until killed."""
    runner = web.AppRunner(bare_app(kind, urls, session_dir), access_log=None)

    async def main() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    uvloop.run(main())


async def _seed(kind: str, urls: dict[str, str], session_dir: Path) -> dict[str, str]:
    """Create the credential the bare handler will read; return the header to send."""
    sid = secrets.token_urlsafe(32)
    now = int(time.time())
    # The same header and claims the server issues, so both decode a token of one size.
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "1", "iat": now, "exp": now + 3600,
         "jti": secrets.token_urlsafe(16), "name": "user1", "role": "user",
         "fam": secrets.token_urlsafe(16)},
        SECRET,
        algorithm="HS256",
        headers={"kid": secrets.token_urlsafe(16)[:22], "typ": "at+jwt"},
    )  # fmt: skip
    if kind == "session-file":
        (session_dir / f"sess_{sid}").write_bytes(RECORD)
    elif kind == "session-redis":
        r = Redis.from_url(urls["redis"])
        await r.set(f"sess:{sid}", RECORD)
        await r.aclose()
    elif kind == "session-postgres":
        conn = await asyncpg.connect(urls["postgres"])
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions (id text PRIMARY KEY, user_id integer, "
            "created_at double precision, expires_at double precision)"
        )
        await conn.execute("INSERT INTO sessions VALUES ($1, 1, 1.0, 99999999999.0)", sid)
        await conn.close()
    if kind in ("jwt", "jwt-denylist"):
        return {"Authorization": f"Bearer {token}"}
    return {"Cookie": f"session_id={sid}"}


def _login(base: str) -> dict[str, str]:
    req = urllib.request.Request(  # noqa: S310 (loopback http only)
        base + "/login",
        data=b'{"username":"user1","password":"secret-1"}',
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
        body = json.loads(r.read())
        cookie = r.headers.get("Set-Cookie", "").split(";")[0]
    if "access_token" in body:
        return {"Authorization": f"Bearer {body['access_token']}"}
    return {"Cookie": cookie}


def _wait(base: str, path: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(base + path, headers=headers)  # noqa: S310
            with urllib.request.urlopen(req, timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{base}{path} did not answer")


def _cpu(pids: list[int]) -> dict[int, float]:
    """Return {pid: CPU seconds (user + system) used so far}."""
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def _used(before: dict[int, float], after: dict[int, float]) -> float:
    """Return the CPU seconds used between two snapshots (a new process counts from zero)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _store_pids(stores: StoreSet) -> list[int]:
    # PostgreSQL forks a backend per connection, so the set is read again each time.
    return [pid for proc in stores.processes.values() for pid in proc.pids()]


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int) -> float:
    """Return requests/s of a wrk run pinned to the second core (non-2xx responses fail it)."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "0", *cmd], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Measure bare handlers and the server side by side; print a table; return 0."""
    p = argparse.ArgumentParser(prog="python -m loadtests.baseline")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--kinds", default="none,session-file,jwt,session-redis,jwt-denylist,session-postgres"
    )
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("baseline: needs wrk on PATH (apt-get install wrk)", file=sys.stderr)
        return 1
    if len(os.sched_getaffinity(0)) < 2:
        print("baseline: needs two cores (server on one, wrk on the other)", file=sys.stderr)
        return 1
    kinds = args.kinds.split(",")
    py = sys.executable
    print(
        f"{'mechanism':<18}{'bare req/s':>12}{'server req/s':>14}{'ratio':>8}"
        f"{'server µs/req':>15}{'store µs/req':>14}"
    )
    with StoreSet(["postgres", "redis"]) as stores, tempfile.TemporaryDirectory() as tmp:
        # Stores share the server's core, as in the bench runner.
        pin(_store_pids(stores), {0})
        urls = {str(k): v for k, v in stores.urls.items()}
        env = {**os.environ, **stores.env(), "SESSION_DIR": tmp}
        for kind in kinds:
            port = free_port()
            bare = _start([py, "-m", "loadtests.baseline", "--serve", kind, str(port), tmp], env)
            try:
                headers = asyncio.run(_seed(kind, urls, Path(tmp)))
                url = f"http://127.0.0.1:{port}"
                _wait(url, "/me", headers)
                bare_rps = wrk(url + "/me", headers, args.seconds, args.connections)
            finally:
                bare.kill()
                bare.wait()
            port = free_port()
            backend = "session-file" if kind == "none" else kind
            server = _start(
                [py, "-m", "servers", "--backend", backend, "--port", str(port), "--users", "10",
                 "--refresh-store", "none" if kind == "jwt" else "redis"],
                env,
            )  # fmt: skip
            try:
                url = f"http://127.0.0.1:{port}"
                _wait(url, "/public", {})
                path = "/public" if kind == "none" else "/me"
                headers = {} if kind == "none" else _login(url)
                before = _cpu([server.pid]), _cpu(_store_pids(stores))
                server_rps = wrk(url + path, headers, args.seconds, args.connections)
                after = _cpu([server.pid]), _cpu(_store_pids(stores))
            finally:
                server.terminate()
                server.wait()
            label = "no auth (/public)" if kind == "none" else kind
            served = server_rps * args.seconds
            print(
                f"{label:<18}{bare_rps:>12,.0f}{server_rps:>14,.0f}{server_rps / bare_rps:>8.0%}"
                f"{1e6 * _used(before[0], after[0]) / served:>15.1f}"
                f"{1e6 * _used(before[1], after[1]) / served:>14.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        store_urls = {
            "redis": os.environ.get("REDIS_URL", ""),
            "postgres": os.environ.get("DATABASE_URL", ""),
        }
        serve_bare(sys.argv[2], store_urls, Path(sys.argv[4]), int(sys.argv[3]))
    else:
        sys.exit(main())
