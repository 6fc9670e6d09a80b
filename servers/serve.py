"""Running the app: one process, or N workers sharing one SO_REUSEPORT socket, on uvloop."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
from multiprocessing.process import BaseProcess

import uvloop
from aiohttp import web

from servers.app import USERS, create_app
from servers.backends import BACKENDS
from servers.errors import ConfigError
from servers.keyring import KeyRing
from servers.settings import Settings
from servers.users import UserDirectory

# Request heads carry the largest token of the size sweep; aiohttp's default is 8 KiB.
MAX_FIELD_BYTES = 16 * 1024


def make_runner(app: web.Application) -> web.AppRunner:
    """Return a runner with authbench's request-head limits and no access log."""
    return web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        max_field_size=MAX_FIELD_BYTES,
        max_line_size=MAX_FIELD_BYTES,
    )


async def preflight(settings: Settings) -> None:
    """Return once keys parse and every store answers (creating tables); raises ConfigError."""
    if settings.is_jwt:
        KeyRing.from_settings(settings)
    users = UserDirectory(
        settings.users, time_cost=settings.pw_time_cost, memory_kib=settings.pw_memory_kib
    )
    async with BACKENDS[settings.backend](settings, users):
        pass


async def _serve(settings: Settings, *, reuse_port: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    runner = make_runner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port)
        await site.start()
        print(
            f"authbench {settings.backend} listening on http://{settings.host}:{settings.port}"
            f" (pid {os.getpid()}, {len(app[USERS])} users)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        await runner.cleanup()


def run_worker(settings: Settings, reuse_port: bool) -> None:
    """Serve until SIGINT/SIGTERM in this process."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            runner.run(_serve(settings, reuse_port=reuse_port))
        except ConfigError as exc:
            print(f"authbench: {exc}", file=sys.stderr)
            sys.exit(1)
        except OSError as exc:
            print(
                f"authbench: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
                file=sys.stderr,
            )
            sys.exit(1)


def run(settings: Settings) -> int:
    """Serve `settings` in one process or `settings.workers` forked ones; return an exit code."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(preflight(settings))
    if settings.workers == 1:
        run_worker(settings, reuse_port=False)
        return 0
    return _supervise(settings)


def _supervise(settings: Settings) -> int:
    # Fork after the user table is hashed (cached in this process) so workers share it.
    ctx = multiprocessing.get_context("fork")
    workers: list[BaseProcess] = [
        ctx.Process(target=run_worker, args=(settings, True), name=f"authbench-worker-{i}")
        for i in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.is_alive() and w.pid:
                os.kill(w.pid, signal.SIGTERM)

    for w in workers:
        w.start()
    # Installed after the forks, so a worker never inherits the supervisor's handler.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(timeout=0.2)
            if not w.is_alive() and not stopping:
                # One worker gone means a half-capacity server: stop the rest, report it.
                print(f"authbench: {w.name} exited with {w.exitcode}", file=sys.stderr)
                status = 1
                stop(signal.SIGTERM, None)
    return status
