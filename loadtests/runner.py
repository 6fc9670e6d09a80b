"""The bench runner: for each configuration, start it, verify it, load it, account for it.

Plain Python: Locust runs as child processes per measurement (`loadtests.locust_process`),
never imported here. With a server URL the runner measures a deployment it did not start:
it starts no server and no store, and CPU per request is reported as unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from loadtests.config import BenchConfigError, BenchFile, Configuration, Profile
from loadtests.launch import (
    LaunchError,
    Server,
    StorePool,
    check_server_url,
    connect_remote,
    flush,
    remote_store_env,
    run_server,
    store_env,
)
from loadtests.locust_process import Topology
from loadtests.measure import MAX_STEPS, CellMeasurement, CellStatus, Load
from loadtests.progress import Progress
from loadtests.results import (
    cpu_model,
    dependency_hash,
    git_state,
    package_versions,
    write_json,
    write_summary_csv,
)
from loadtests.stores import StoreNotAvailable, StoreProcess, StoreStartError
from loadtests.verify import Outcome, verify

ROOT = Path(__file__).resolve().parent.parent
CELL_OVERHEAD_SECONDS = 4.0


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
        self,
        bench: BenchFile,
        profile: Profile,
        out_root: Path,
        *,
        mode: str = "latency",
        server_url: str | None = None,
        topology: Topology | None = None,
    ) -> None:
        """Check the plan; raises BenchConfigError for anything that would fail later.

        With `server_url` the profile must name exactly one configuration (the one the remote
        server runs) and the environment must locate its stores (see `remote_store_env`).
        """
        self.bench = bench
        self.profile = profile
        self.mode = mode
        self.configs = bench.check(profile)
        self.topology = topology or Topology()
        if self.topology.workers < 0:
            raise BenchConfigError("--locust-workers must be 0 or more")
        if self.topology.master_host and not self.topology.distributed:
            raise BenchConfigError(
                "--locust-master-host needs --locust-workers N: how many workers to wait for"
            )
        self.server_url = check_server_url(server_url) if server_url else None
        if self.server_url:
            if len(self.configs) != 1:
                raise BenchConfigError(
                    "--server-url measures one running server: name the configuration it runs "
                    f"with --configs NAME (the profile has {len(self.configs)})"
                )
            remote_store_env(self.configs[0], os.environ)
        out_root = out_root.absolute()  # workers are told paths; theirs may have another cwd
        self.run_dir = out_root / new_run_id(profile.name)
        # A remote server leaves this machine's cores to the load generator.
        self.server_cores, self.locust_cores = (None, None) if server_url else split_cores()
        self.load = Load(
            profile=profile,
            mode=mode,
            topology=self.topology,
            results_root=out_root,
            server_cores=self.server_cores,
            locust_cores=self.locust_cores,
            remote_server=self.server_url is not None,
        )
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
                "pacing": "Poisson arrivals: each Locust user waits an exponential time (Locust "
                "poisson) between tasks; the achieved rate falls short of the offered one by "
                "the time tasks take",
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
            "server": (
                {"url": self.server_url, "started_by_runner": False, "cpu": "unavailable"}
                if self.server_url
                else {"started_by_runner": True, "cpu": "measured"}
            ),
            "locust": self.topology.describe(),
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
            with self._server(config, repeat, pool, workdir) as (server, stores):
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
                    cell = self._cell_dir(config, scenario, repeat)
                    measured = CellMeasurement(self.load, cell, scenario, server, stores)
                    self._row(config, scenario, repeat, **measured.run(progress))
        except (LaunchError, StoreNotAvailable, StoreStartError, BenchConfigError, OSError) as exc:
            progress.note(f"{config.name}: {exc}")
            done = {(r["config"], r["scenario"], r["repeat"]) for r in self.rows}
            for scenario in scenarios:
                if (config.name, scenario, repeat) not in done:
                    self._row(
                        config, scenario, repeat, status=CellStatus.ERROR.value, detail=str(exc)
                    )

    @contextlib.contextmanager
    def _server(
        self, config: Configuration, repeat: int, pool: StorePool, workdir: Path
    ) -> Iterator[tuple[Server, Mapping[str, StoreProcess | str]]]:
        """Yield the configuration's server and its stores: started here, or the remote one."""
        if self.server_url:
            env = {**os.environ, **remote_store_env(config, os.environ)}
            yield connect_remote(config, self.server_url, env), {}
            return
        stores = pool.acquire(config)
        flush(stores)
        env = store_env(stores)
        env["SESSION_DIR"] = str(workdir / f"sessions-{config.name}-{repeat}")
        log = self.run_dir / config.name / f"server-r{repeat}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with run_server(config, env, cores=self.server_cores, log_path=log) as server:
            yield server, stores
