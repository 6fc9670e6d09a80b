"""The bench runner: for each configuration, start it, verify it, load it, account for it.

Plain Python: Locust runs as one child process per measurement, never imported here.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import enum
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadtests.config import BenchConfigError, BenchFile, Configuration, Profile
from loadtests.launch import (
    LaunchError,
    ServerProcess,
    StorePool,
    flush,
    run_server,
    store_env,
)
from loadtests.progress import Progress
from loadtests.resources import ResourceSampler, process_tree
from loadtests.results import (
    Record,
    cpu_model,
    dependency_hash,
    git_state,
    latency_stats,
    package_versions,
    read_records,
    summarize,
    window,
    write_json,
    write_step_csv,
    write_summary_csv,
)
from loadtests.stores import StoreNotAvailable, StoreProcess, StoreStartError
from loadtests.verify import Outcome, verify

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# Requests one Locust task makes in each scenario, to turn an offered rate into pacing.
REQUESTS_PER_TASK = {"browse": 1.0, "login": 3.0, "refresh": 2.0, "mixed": 1.12}
CELL_OVERHEAD_SECONDS = 4.0
# Locust runs this much past the window so that the window is covered to its end.
TAIL_SECONDS = 1.0
# `max` mode: closed-loop users stepped up; the start of each step is ramp, not measured.
MAX_STEPS = (1, 4, 16, 64)
STEP_RAMP_SECONDS = 1.0
SATURATED_PERCENT = 90.0
LOCUST_GRACE_SECONDS = 60.0


class CellStatus(enum.Enum):
    """How one configuration × scenario × repeat ended."""

    OK = "ok"
    UNVERIFIED = "unverified"
    ERROR = "error"
    INTERRUPTED = "interrupted"


def split_cores() -> tuple[set[int] | None, set[int] | None]:
    """Return (server cores, load-generator cores): the first half and the rest.

    On a single core nothing is pinned and both get None.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    half = len(cores) // 2
    return set(cores[:half]), set(cores[half:])


def new_run_id(profile: str) -> str:
    """Return a sortable, unique-enough run id: UTC time and the profile name."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S") + f"-{profile}"


class Runner:
    """Measures every configuration of a profile and writes `results/<run-id>/`."""

    def __init__(
        self, bench: BenchFile, profile: Profile, out_root: Path, *, mode: str = "latency"
    ) -> None:
        self.bench = bench
        self.profile = profile
        self.mode = mode
        self.configs = bench.check(profile)
        self.run_dir = out_root / new_run_id(profile.name)
        self.server_cores, self.locust_cores = split_cores()
        self.rows: list[dict[str, Any]] = []
        self.manifest: dict[str, Any] = {}

    def plan(self) -> list[tuple[Configuration, int]]:
        """Return (configuration, repeat) in the order they will run (shuffled if asked)."""
        cells = [(c, k) for k in range(1, self.profile.repeat + 1) for c in self.configs]
        if self.profile.shuffle:
            random.Random(self.manifest.get("shuffle_seed", 0)).shuffle(cells)
        return cells

    def run(self) -> Path:
        """Run the whole profile and return the run folder.

        A configuration that fails to start or verify is recorded and the run goes on;
        KeyboardInterrupt stops everything and marks the run incomplete before re-raising.
        """
        self.run_dir.mkdir(parents=True, exist_ok=False)
        self._start_manifest()
        if self.locust_cores:
            os.sched_setaffinity(0, self.locust_cores)  # our own sampling stays off the server
        plan = self.plan()
        per_cell = self.profile.warmup + self.profile.duration + CELL_OVERHEAD_SECONDS
        progress = Progress(len(plan) * len(self.profile.scenarios), per_cell)
        workdir = Path(tempfile.mkdtemp(prefix="authbench-run-"))
        complete = False
        try:
            with StorePool(workdir, self.server_cores) as pool:
                for index, (config, repeat) in enumerate(plan):
                    first = index * len(self.profile.scenarios) + 1
                    self._measure_config(config, repeat, first, pool, workdir, progress)
                self.manifest["versions"]["stores"] = pool.versions()
            complete = True
        except KeyboardInterrupt:
            progress.note("interrupted: stopping Locust, servers and stores")
            raise
        finally:
            progress.close()
            shutil.rmtree(workdir, ignore_errors=True)
            self._finish(complete)
        return self.run_dir

    def _start_manifest(self) -> None:
        self.manifest = {
            "run_id": self.run_dir.name,
            "started_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "ended_utc": None,
            "complete": False,
            "command": sys.argv,
            "git": git_state(ROOT),
            "profile": {
                "name": self.profile.name,
                "description": self.profile.description,
                "scenarios": list(self.profile.scenarios),
                "offered_rps": dict(self.profile.rate),
                "users": self.profile.users,
                "warmup_s": self.profile.warmup,
                "duration_s": self.profile.duration,
                "repeat": self.profile.repeat,
                "shuffle": self.profile.shuffle,
                "mode": self.mode,
                "max_steps_users": list(MAX_STEPS) if self.mode == "max" else None,
                "pacing": "Locust constant_throughput per user (paced, open-loop while "
                "responses are faster than the pacing interval)",
            },
            "shuffle_seed": random.SystemRandom().randrange(2**32),
            "configurations": {c.name: c.as_dict() for c in self.configs},
            "versions": {
                "python": sys.version.split()[0],
                "packages": package_versions(),
                "stores": {},
            },
            "dependency_hash": dependency_hash(),
            "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count()},
            "pinning": {
                "server_and_stores": sorted(self.server_cores or []),
                "locust_and_runner": sorted(self.locust_cores or []),
            },
        }
        write_json(self.run_dir / "manifest.json", self.manifest)

    def _finish(self, complete: bool) -> None:
        self.manifest["ended_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.manifest["complete"] = complete
        write_json(self.run_dir / "manifest.json", self.manifest)
        write_summary_csv(self.run_dir / "summary.csv", self.rows)

    def _cell_dir(self, config: Configuration, scenario: str, repeat: int) -> Path:
        path = self.run_dir / config.name / scenario / f"r{repeat}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _row(self, config: Configuration, scenario: str, repeat: int, **fields: Any) -> None:
        row = {
            "config": config.name,
            "scenario": scenario,
            "repeat": repeat,
            "backend": config.backend,
            "offered_rps": self.profile.rate[scenario],
            **fields,
        }
        self.rows.append(row)
        write_json(self._cell_dir(config, scenario, repeat) / "summary.json", row)
        write_summary_csv(self.run_dir / "summary.csv", self.rows)

    def _measure_config(
        self,
        config: Configuration,
        repeat: int,
        first_index: int,
        pool: StorePool,
        workdir: Path,
        progress: Progress,
    ) -> None:
        scenarios = self.profile.scenarios
        progress.start_cell(first_index, config.name, scenarios[0], repeat)
        try:
            stores = pool.acquire(config)
            flush(stores)
            env = store_env(stores)
            env["SESSION_DIR"] = str(workdir / f"sessions-{config.name}-{repeat}")
            log = self.run_dir / config.name / f"server-r{repeat}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with run_server(config, env, cores=self.server_cores, log_path=log) as server:
                results = asyncio.run(verify(server.base_url, server.settings))
                verdict = [
                    {"check": r.name, "outcome": r.outcome.value, "detail": r.detail}
                    for r in results
                ]
                failed = [r for r in results if r.outcome is Outcome.FAILED]
                for scenario in scenarios:
                    write_json(self._cell_dir(config, scenario, repeat) / "verify.json", verdict)
                if failed:
                    detail = "; ".join(f"{r.name}: {r.detail}" for r in failed)
                    progress.note(f"{config.name}: verification failed, skipped ({detail})")
                    for scenario in scenarios:
                        self._row(
                            config,
                            scenario,
                            repeat,
                            status=CellStatus.UNVERIFIED.value,
                            detail=detail,
                        )
                    return
                for offset, scenario in enumerate(scenarios):
                    progress.start_cell(first_index + offset, config.name, scenario, repeat)
                    self._measure(config, scenario, repeat, server, stores, progress)
        except (LaunchError, StoreNotAvailable, StoreStartError, BenchConfigError, OSError) as exc:
            progress.note(f"{config.name}: {exc}")
            done = {(r["config"], r["scenario"], r["repeat"]) for r in self.rows}
            for scenario in scenarios:
                if (config.name, scenario, repeat) not in done:
                    self._row(
                        config, scenario, repeat, status=CellStatus.ERROR.value, detail=str(exc)
                    )

    def _measure(
        self,
        config: Configuration,
        scenario: str,
        repeat: int,
        server: ServerProcess,
        stores: Mapping[str, StoreProcess | str],
        progress: Progress,
    ) -> None:
        p = self.profile
        cell = self._cell_dir(config, scenario, repeat)
        records_path = cell / "requests.csv.gz"
        env = {
            "AUTHBENCH_SCENARIO": scenario,
            "AUTHBENCH_USERS": str(server.settings.users),
            "AUTHBENCH_RECORDS": str(records_path),
        }
        if self.mode == "max":
            env["AUTHBENCH_USER_RATE"] = "0"
            env["AUTHBENCH_STEPS"] = ",".join(f"{u}:{p.duration:g}" for u in MAX_STEPS)
            run_time = len(MAX_STEPS) * p.duration + TAIL_SECONDS
        else:
            user_rate = p.rate[scenario] / p.users / REQUESTS_PER_TASK[scenario]
            env["AUTHBENCH_USER_RATE"] = f"{user_rate:.6f}"
            run_time = p.warmup + p.duration + TAIL_SECONDS
        locust = LocustProcess(
            base_url=server.base_url,
            user_class="CookieUser" if server.settings.uses_cookies else "BearerUser",
            users=p.users,
            run_time=run_time,
            env=env,
            cell=cell,
            cores=self.locust_cores,
        )
        groups = {"server": server.pids, "locust": locust.pids}
        owned = {k: s for k, s in stores.items() if isinstance(s, StoreProcess)}
        for kind, store in owned.items():
            groups[f"store:{kind}"] = store.pids
        with ResourceSampler(groups) as sampler:
            locust.start()
            while not locust.wait(1.0):
                progress.tick(locust.elapsed(), *locust.live_stats())
        if not records_path.exists():
            self._row(
                config,
                scenario,
                repeat,
                status=CellStatus.ERROR.value,
                detail=f"Locust exited with {locust.returncode} and wrote no records: "
                f"{locust.log_tail()}",
            )
            return
        records = read_records(records_path)
        if not records:
            self._row(config, scenario, repeat, status=CellStatus.ERROR.value, detail="no requests")
            return
        if self.mode == "max":
            steps = self._steps(records, sampler)
            write_step_csv(cell / "steps.csv", steps)
            best = max(steps, key=lambda s: s["achieved_rps"])
            start, end = best["start"], best["end"]
            extra: dict[str, Any] = {
                "mode": "max",
                "capacity_rps": best["achieved_rps"],
                "saturated": best["saturated"],
            }
        else:
            start, end = window(records, p.warmup, p.duration)
            extra = {"mode": "latency"}
        store_cpu = (
            sum(sampler.cpu_between(f"store:{k}", start, end) for k in owned)
            if len(owned) == len(stores)
            else None
        )
        summary = summarize(
            records,
            start=start,
            end=end,
            server_cpu_s=sampler.cpu_between("server", start, end),
            store_cpu_s=store_cpu,
            locust_cpu_percent=100 * sampler.cpu_between("locust", start, end) / (end - start),
        )
        sampler.write_csv(cell / "resources.csv")
        self._row(
            config, scenario, repeat, status=CellStatus.OK.value, detail="", **summary, **extra
        )

    def _steps(self, records: list[Record], sampler: ResourceSampler) -> list[dict[str, Any]]:
        """Return per-step load, latency and which side was saturated, for a `max` run."""
        first = min(r.t_start for r in records)
        server_cores = len(self.server_cores or []) or (os.cpu_count() or 1)
        steps = []
        for i, users in enumerate(MAX_STEPS):
            start = first + i * self.profile.duration + STEP_RAMP_SECONDS
            end = first + (i + 1) * self.profile.duration
            inside = [r for r in records if start <= r.t_start < end]
            span = end - start
            server_pct = 100 * sampler.cpu_between("server", start, end) / span / server_cores
            locust_pct = 100 * sampler.cpu_between("locust", start, end) / span
            saturated = (
                "server"
                if server_pct >= SATURATED_PERCENT
                else "generator"
                if locust_pct >= SATURATED_PERCENT
                else "neither"
            )
            steps.append(
                {
                    "users": users,
                    "start": start,
                    "end": end,
                    "achieved_rps": len(inside) / span,
                    "failures": sum(1 for r in inside if not r.ok),
                    **latency_stats(inside),
                    "server_cpu_percent": server_pct,
                    "locust_cpu_percent": locust_pct,
                    "saturated": saturated,
                }
            )
        return steps


class LocustProcess:
    """One headless Locust run, pinned to the load-generator cores."""

    def __init__(
        self,
        *,
        base_url: str,
        user_class: str,
        users: int,
        run_time: float,
        env: Mapping[str, str],
        cell: Path,
        cores: set[int] | None,
    ) -> None:
        self._cmd = [
            str(Path(sys.executable).with_name("locust")),
            "-f", str(LOCUSTFILE),
            "--headless",
            "--only-summary",
            "-u", str(users),
            "-r", str(users),
            "--run-time", f"{max(1, round(run_time))}s",
            "--host", base_url,
            "--csv", str(cell / "locust"),
            "--exit-code-on-error", "0",
            user_class,
        ]  # fmt: skip
        self._env = {**os.environ, **env}
        self._cell = cell
        self._cores = cores
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._deadline = run_time + LOCUST_GRACE_SECONDS

    def start(self) -> None:
        """Start Locust."""
        cores = self._cores
        with (self._cell / "locust.log").open("wb") as log:
            self._proc = subprocess.Popen(
                self._cmd,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
                start_new_session=True,
            )
        self._started = time.monotonic()

    def pids(self) -> list[int]:
        """Return Locust's pids."""
        return process_tree(self._proc.pid) if self._proc else []

    def elapsed(self) -> float:
        """Return seconds since start."""
        return time.monotonic() - self._started

    def wait(self, timeout: float) -> bool:
        """Return True once Locust has exited (killing it past its deadline)."""
        assert self._proc is not None
        try:
            self._proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            if self.elapsed() > self._deadline:
                self.stop()
                return True
            return False
        except KeyboardInterrupt:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Locust (SIGINT first so it writes its records, then SIGKILL)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGINT)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    @property
    def returncode(self) -> int | None:
        """Locust's exit status, once it has exited."""
        return self._proc.returncode if self._proc else None

    def live_stats(self) -> tuple[float | None, int | None]:
        """Return (current req/s, failures so far) from Locust's stats history, if written."""
        history = self._cell / "locust_stats_history.csv"
        try:
            with history.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
        except OSError:
            return None, None
        if not rows:
            return None, None
        last = rows[-1]
        try:
            return float(last["Requests/s"]), int(last["Total Failure Count"])
        except (KeyError, ValueError):
            return None, None

    def log_tail(self, lines: int = 3) -> str:
        """Return the last lines of Locust's output."""
        try:
            text = (self._cell / "locust.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])
