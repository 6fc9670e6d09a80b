"""`python -m loadtests run|merge|serve|exec-server|ui`: the bench runner and its helpers."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from loadtests.collect import merge_run
from loadtests.config import DEFAULT_FILE, SCENARIOS, BenchConfigError, Configuration, load
from loadtests.launch import LaunchError, StorePool, run_server, store_env
from loadtests.locust_process import DEFAULT_MASTER_PORT, LOCUSTFILE, Topology
from loadtests.runner import Runner
from loadtests.stores import StoreNotAvailable, StoreStartError
from servers.errors import ConfigError

RESULTS = Path(__file__).resolve().parent.parent / "results"
# Flags naming a store (or the session folder) the runner then uses as it is.
STORE_FLAGS = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "memcached_url": "MEMCACHED_URL",
    "session_dir": "SESSION_DIR",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _add_deployment_flags(run: argparse.ArgumentParser) -> None:
    where = run.add_argument_group(
        "a deployment the runner did not start (stores named here are never started or flushed)"
    )
    where.add_argument(
        "--server-url",
        help="measure the server at this URL instead of starting one; --configs names the "
        "one configuration it runs (CPU per request is then reported as unavailable)",
    )
    for flag, var in STORE_FLAGS.items():
        where.add_argument(
            "--" + flag.replace("_", "-"), help=f"overrides ${var}; needed with --server-url"
        )
    dist = run.add_argument_group("distributed Locust (its own master/worker mode)")
    dist.add_argument(
        "--locust-workers",
        type=_count,
        default=0,
        metavar="N",
        help="run a Locust master and N workers (on loopback, or remote with "
        "--locust-master-host); 0 = one Locust process",
    )
    dist.add_argument(
        "--locust-master-host",
        metavar="ADDR",
        help="bind the master to ADDR and wait for N workers started on other machines",
    )
    dist.add_argument("--locust-master-port", type=int, default=DEFAULT_MASTER_PORT, metavar="PORT")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of `python -m loadtests`."""
    p = _Parser(prog="python -m loadtests", description="Measure authbench configurations.")
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="configurations TOML")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="measure a profile and write results/<run-id>/")
    run.add_argument("--profile", default="quick")
    run.add_argument("--configs", type=_csv_list, help="comma list overriding the profile's")
    run.add_argument("--scenarios", type=_csv_list, help=f"comma list of {', '.join(SCENARIOS)}")
    run.add_argument("--rate", type=float, help="offered requests/s for every scenario")
    run.add_argument("--users", type=int, help="Locust users")
    run.add_argument("--duration", type=float, help="measurement window, seconds")
    run.add_argument("--warmup", type=float, help="warm-up before the window, seconds")
    run.add_argument("--repeat", type=int, help="repeats of each configuration")
    run.add_argument("--out", type=Path, default=RESULTS, help="results root folder")
    run.add_argument("--report", action="store_true", help="write report.html at the end")
    run.add_argument(
        "--mode",
        choices=("latency", "max"),
        default="latency",
        help="latency: fixed offered rate; max: step load to find capacity",
    )
    _add_deployment_flags(run)
    merge = sub.add_parser(
        "merge", help="merge worker records copied into a run's cells and re-summarize them"
    )
    merge.add_argument("run_dir", type=Path, help="results/<run-id>")
    serve = sub.add_parser("serve", help="start the stores a backend needs and one server")
    serve.add_argument("--backend", required=True)
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("server_args", nargs=argparse.REMAINDER, help="more server flags")
    ex = sub.add_parser(
        "exec-server",
        help="become the server of one configuration (the container's entry point)",
    )
    ex.add_argument(
        "--config",
        default=os.environ.get("AUTHBENCH_CONFIG"),
        help="a configuration of the file (default: $AUTHBENCH_CONFIG)",
    )
    ex.add_argument("--host", default="0.0.0.0")
    ex.add_argument("--port", type=int, default=8080)
    ex.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    ex.add_argument(
        "server_args",
        nargs=argparse.REMAINDER,
        help="more server flags, after $AUTHBENCH_SERVER_ARGS (e.g. --workers 4)",
    )
    ui = sub.add_parser("ui", help="one configuration under Locust's web UI")
    ui.add_argument("--config", required=True)
    ui.add_argument("--scenario", default="browse", choices=SCENARIOS)
    ui.add_argument("--web-port", type=int, default=8089)
    return p


def print_table(summary: Path) -> None:
    """Print the run's headline numbers, one line per configuration × scenario × repeat."""
    with summary.open(newline="") as f:
        rows = list(csv.DictReader(f))
    head = f"{'configuration':<26}{'scenario':<9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
    head += f"{'srv µs/req':>11}{'store µs':>9}{'fail':>6}  status"
    print(head)
    for r in rows:
        bound = " (generator-bound)" if r["generator_bound"] == "1" else ""
        if r["mode"] == "max":
            bound += f" · capacity {r['capacity_rps']} req/s, saturated: {r['saturated']}"
        # An ok row without a CPU figure could not measure it (remote server, external
        # store): "n/a", which must not read as "nothing".
        cpu = "n/a" if r["status"] == "ok" else "-"
        print(
            f"{r['config']:<26}{r['scenario']:<9}{r['achieved_rps'] or '-':>8}"
            f"{r['p50_ms'] or '-':>8}{r['p99_ms'] or '-':>8}"
            f"{r['cpu_us_per_req_server'] or cpu:>11}{r['cpu_us_per_req_store'] or cpu:>9}"
            f"{r['failures'] or '-':>6}  {r['status']}{bound}"
        )


def _sigterm_as_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    # `docker stop` sends SIGTERM (and to PID 1 nothing happens without a handler): stop
    # Locust, servers and stores and keep the partial results, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    bench = load(args.file)
    profile = bench.profile(args.profile).with_overrides(
        configs=args.configs,
        scenarios=args.scenarios,
        rate=args.rate,
        users=args.users,
        duration=args.duration,
        warmup=args.warmup,
        repeat=args.repeat,
    )
    for flag, var in STORE_FLAGS.items():
        if getattr(args, flag):
            os.environ[var] = str(getattr(args, flag))  # read by the store pool and servers
    topology = Topology(
        workers=args.locust_workers,
        master_host=args.locust_master_host,
        master_port=args.locust_master_port,
    )
    runner = Runner(
        bench, profile, args.out, mode=args.mode, server_url=args.server_url, topology=topology
    )
    print(
        f"authbench: {len(runner.configs)} configurations × {len(profile.scenarios)} "
        f"scenarios → {runner.run_dir}",
        file=sys.stderr,
    )
    try:
        run_dir = runner.run()
    except KeyboardInterrupt:
        print(f"authbench: interrupted; partial results in {runner.run_dir}", file=sys.stderr)
        return 130
    print_table(run_dir / "summary.csv")
    print(f"results: {run_dir}")
    if args.report:
        from analysis.report import write_report  # the report step; not needed by the runner

        html, _ = write_report(run_dir)
        print(f"report: {html}")
    bad = [r for r in runner.rows if r["status"] != "ok" or r.get("failures")]
    return 1 if bad else 0


def _merge(args: argparse.Namespace) -> int:
    try:
        touched = merge_run(args.run_dir)
    except (ValueError, OSError) as exc:
        raise BenchConfigError(str(exc)) from None
    for line in touched or ["nothing to merge: no cell has partial records with worker files"]:
        print(f"authbench: {line}", file=sys.stderr)
    print_table(args.run_dir / "summary.csv")
    return 0


def _exec_server(args: argparse.Namespace) -> int:
    if not args.config:
        raise BenchConfigError("exec-server needs --config NAME or AUTHBENCH_CONFIG")
    bench = load(args.file)
    if args.config not in bench.configs:
        raise BenchConfigError(
            f"unknown configuration {args.config!r}; known: {', '.join(bench.configs)}"
        )
    extra = shlex.split(os.environ.get("AUTHBENCH_SERVER_ARGS", ""))
    extra += [a for a in args.server_args if a != "--"]
    config = dataclasses.replace(bench.configs[args.config], argv=tuple(extra))
    config.settings(os.environ)  # a missing store URL or a bad flag fails here, in one line
    argv = [sys.executable, "-m", "servers", *config.server_argv()]
    argv += ["--host", args.host, "--port", str(args.port)]
    if args.dry_run:
        print(shlex.join(argv))
        return 0
    sys.stdout.flush()
    os.execv(sys.executable, argv)  # noqa: S606 (the server becomes the container's process)


def _serve(args: argparse.Namespace) -> int:
    extra = [a for a in args.server_args if a != "--"]
    config = Configuration(name=args.backend, backend=args.backend, argv=tuple(extra))
    config.store_kinds()  # validates the flags before anything starts
    with (
        tempfile.TemporaryDirectory(prefix="authbench-serve-") as tmp,
        StorePool(Path(tmp), None) as pool,
    ):
        env = store_env(pool.acquire(config))
        env.setdefault("SESSION_DIR", str(Path(tmp) / "sessions"))
        with run_server(config, env, cores=None, log_path=None, port=args.port) as server:
            print(
                f"authbench: {config.backend} on {server.base_url} (Ctrl-C to stop)",
                file=sys.stderr,
            )
            _wait_for_interrupt(server.proc)
    return 0


def _ui(args: argparse.Namespace) -> int:
    bench = load(args.file)
    if args.config not in bench.configs:
        raise BenchConfigError(
            f"unknown configuration {args.config!r}; known: {', '.join(bench.configs)}"
        )
    config = bench.configs[args.config]
    with (
        tempfile.TemporaryDirectory(prefix="authbench-ui-") as tmp,
        StorePool(Path(tmp), None) as pool,
    ):
        env = store_env(pool.acquire(config))
        env["SESSION_DIR"] = str(Path(tmp) / "sessions")
        with run_server(config, env, cores=None, log_path=Path(tmp) / "server.log") as server:
            user_class = "CookieUser" if server.settings.uses_cookies else "BearerUser"
            cmd = [
                str(Path(sys.executable).with_name("locust")),
                "-f",
                str(LOCUSTFILE),
                "--host",
                server.base_url,
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(args.web_port),
                user_class,
            ]
            locust_env = {
                **os.environ,
                "AUTHBENCH_SCENARIO": args.scenario,
                "AUTHBENCH_USERS": str(server.settings.users),
            }
            print(
                f"authbench: Locust UI on http://127.0.0.1:{args.web_port} against "
                f"{server.base_url} (Ctrl-C to stop)",
                file=sys.stderr,
            )
            proc = subprocess.Popen(cmd, env=locust_env)
            _wait_for_interrupt(proc)
    return 0


def _wait_for_interrupt(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return its exit status (1 for a configuration or start-up error)."""
    args = build_parser().parse_args(argv)
    commands = {
        "run": _run,
        "merge": _merge,
        "serve": _serve,
        "exec-server": _exec_server,
        "ui": _ui,
    }
    try:
        return commands[args.command](args)
    except (BenchConfigError, ConfigError, LaunchError, StoreNotAvailable, StoreStartError) as exc:
        print(f"authbench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
