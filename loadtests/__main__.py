"""`python -m loadtests run|serve|ui`: the bench runner and its one-configuration helpers."""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from loadtests.config import DEFAULT_FILE, SCENARIOS, BenchConfigError, Configuration, load
from loadtests.launch import LaunchError, StorePool, run_server, store_env
from loadtests.runner import LOCUSTFILE, Runner
from loadtests.stores import StoreNotAvailable, StoreStartError
from servers.errors import ConfigError

RESULTS = Path(__file__).resolve().parent.parent / "results"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


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
    run.add_argument(
        "--mode",
        choices=("latency", "max"),
        default="latency",
        help="latency: fixed offered rate; max: step load to find capacity",
    )
    serve = sub.add_parser("serve", help="start the stores a backend needs and one server")
    serve.add_argument("--backend", required=True)
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("server_args", nargs=argparse.REMAINDER, help="more server flags")
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
        print(
            f"{r['config']:<26}{r['scenario']:<9}{r['achieved_rps'] or '-':>8}"
            f"{r['p50_ms'] or '-':>8}{r['p99_ms'] or '-':>8}"
            f"{r['cpu_us_per_req_server'] or '-':>11}{r['cpu_us_per_req_store'] or '-':>9}"
            f"{r['failures'] or '-':>6}  {r['status']}{bound}"
        )


def _run(args: argparse.Namespace) -> int:
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
    runner = Runner(bench, profile, args.out, mode=args.mode)
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
    bad = [r for r in runner.rows if r["status"] != "ok" or r.get("failures")]
    return 1 if bad else 0


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
    commands = {"run": _run, "serve": _serve, "ui": _ui}
    try:
        return commands[args.command](args)
    except (BenchConfigError, ConfigError, LaunchError, StoreNotAvailable, StoreStartError) as exc:
        print(f"authbench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
