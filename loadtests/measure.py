"""One cell under load: Locust against the server, CPU sampled, records summarized.

A cell is one configuration × scenario × repeat. Its Locust is one process or a master
with workers (`loadtests.locust_process`); its records are merged per cell
(`loadtests.collect`). When the server is remote its CPU, and its stores', is not ours to
measure: CPU per request is then NaN and the row says why, never zero.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.collect import (
    CellRecords,
    cell_window,
    collect_records,
    locust_cpu_percent,
    partial_note,
    summarize_window,
    window_cpu,
)
from loadtests.config import Profile
from loadtests.launch import Server
from loadtests.locust_process import LocustProcess, Topology
from loadtests.progress import Progress
from loadtests.resources import ResourceSampler
from loadtests.results import Record, latency_stats, write_step_csv
from loadtests.stores import StoreProcess

# Requests one Locust task makes in each scenario, to turn an offered rate into pacing.
REQUESTS_PER_TASK = {"browse": 1.0, "login": 3.0, "refresh": 2.0, "mixed": 1.12}
# Locust runs this much past the window so that the window is covered to its end.
TAIL_SECONDS = 1.0
# `max` mode: closed-loop users stepped up; the start of each step is ramp, not measured.
MAX_STEPS = (1, 4, 16, 64)
STEP_RAMP_SECONDS = 1.0
SATURATED_PERCENT = 90.0
CPU_UNAVAILABLE = "CPU per request unavailable: the server (and its stores) runs elsewhere"


class CellStatus(enum.Enum):
    """How one configuration × scenario × repeat ended."""

    OK = "ok"
    UNVERIFIED = "unverified"
    ERROR = "error"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, kw_only=True)
class Load:
    """What every cell of a run shares: the profile's load, the mode and where things run."""

    profile: Profile
    mode: str
    """``latency`` (fixed offered rate) or ``max`` (step load)."""
    topology: Topology
    results_root: Path
    """Folder holding the run folder; worker records are named relative to it."""
    server_cores: set[int] | None
    locust_cores: set[int] | None
    remote_server: bool
    """True when the runner did not start the server (its CPU is not measured)."""


def _error(detail: str) -> dict[str, Any]:
    return {"status": CellStatus.ERROR.value, "detail": detail}


class CellMeasurement:
    """Runs Locust against one server for one cell and summarizes what it measured."""

    def __init__(
        self,
        load: Load,
        cell: Path,
        scenario: str,
        server: Server,
        stores: Mapping[str, StoreProcess | str],
    ) -> None:
        self.load = load
        self.cell = cell
        self.scenario = scenario
        self.server = server
        self.stores = stores

    @property
    def _locust_cores(self) -> int:
        """Return how many cores the local Locust processes share."""
        return len(self.load.locust_cores or os.sched_getaffinity(0))

    def run(self, progress: Progress) -> dict[str, Any]:
        """Load the server, then return the cell's summary row fields (status, detail, …)."""
        p, cell, scenario, server = self.load.profile, self.cell, self.scenario, self.server
        records_path = cell / "requests.csv.gz"
        env = {
            "AUTHBENCH_SCENARIO": scenario,
            "AUTHBENCH_USERS": str(server.settings.users),
            "AUTHBENCH_RECORDS": str(records_path),
            # Workers on other machines write under their own AUTHBENCH_RECORDS_DIR at this name.
            "AUTHBENCH_RECORDS_NAME": records_path.relative_to(self.load.results_root).as_posix(),
        }
        if self.load.mode == "max":
            env["AUTHBENCH_USER_RATE"] = "0"
            env["AUTHBENCH_STEPS"] = ",".join(f"{u}:{p.duration:g}" for u in MAX_STEPS)
            run_time = len(MAX_STEPS) * p.duration + TAIL_SECONDS
            spawn_rate = float(p.users)
        else:
            user_rate = p.rate[scenario] / p.users / REQUESTS_PER_TASK[scenario]
            env["AUTHBENCH_USER_RATE"] = f"{user_rate:.6f}"
            run_time = p.warmup + p.duration + TAIL_SECONDS
            # Users spawned all at once start in step; spread over one mean interval, their
            # (Poisson) arrivals are independent from the first request on.
            spawn_rate = p.users * user_rate
        if self.load.topology.distributed:
            # Locust spreads users evenly, so no worker has more than ceil(users / workers).
            users = max(MAX_STEPS) if self.load.mode == "max" else p.users
            env["AUTHBENCH_USER_STRIDE"] = str(math.ceil(users / self.load.topology.workers))
        locust = LocustProcess(
            base_url=server.base_url,
            user_class="CookieUser" if server.settings.uses_cookies else "BearerUser",
            users=p.users,
            spawn_rate=spawn_rate,
            run_time=run_time,
            env=env,
            cell=cell,
            cores=self.load.locust_cores,
            topology=self.load.topology,
        )
        groups = {"server": server.pids, "locust": locust.pids}
        if self.load.topology.distributed:
            groups |= locust.process_groups()
        owned = {k: s for k, s in self.stores.items() if isinstance(s, StoreProcess)}
        for kind, store in owned.items():
            groups[f"store:{kind}"] = store.pids
        with ResourceSampler(groups) as sampler:
            try:
                locust.start()
                while not locust.wait(1.0):
                    progress.tick(locust.elapsed(), *locust.live_stats())
            finally:
                locust.stop()
        sampler.write_csv(cell / "resources.csv")
        try:
            found = collect_records(cell, self.load.topology.workers)
        except (ValueError, OSError) as exc:
            return _error(f"cannot merge the workers' records: {exc}")
        # Only workers on other machines may legitimately leave no records here.
        if not found.records and (found.complete or self.load.mode == "max" or not locust.remote):
            return _error(
                "no requests"
                if records_path.exists()
                else f"Locust exited with {locust.returncode} and wrote no records: "
                f"{locust.log_tail()}",
            )
        return self._account(found, sampler, locust)

    def _account(
        self, found: CellRecords, sampler: ResourceSampler, locust: LocustProcess
    ) -> dict[str, Any]:
        """Return the summary of the measured cell: latency, CPU per request, generator health."""
        p, cell = self.load.profile, self.cell
        if self.load.mode == "max":
            steps = self._steps(found.records, sampler)
            write_step_csv(cell / "steps.csv", steps)
            best = max(steps, key=lambda s: s["achieved_rps"])
            span: tuple[float, float] | None = (best["start"], best["end"])
            extra: dict[str, Any] = {
                "mode": "max",
                "capacity_rps": best["achieved_rps"],
                "saturated": best["saturated"],
            }
        else:
            span = cell_window(cell, found, p.warmup, p.duration)
            extra = {"mode": "latency"}
        if span is None:
            return _error("Locust counted no requests")
        start, end = span
        stores = self.stores
        owned = [f"store:{k}" for k, s in stores.items() if isinstance(s, StoreProcess)]
        local = not self.load.remote_server
        server_cpu, store_cpu = window_cpu(
            sampler,
            start,
            end,
            server=local,
            stores=owned if local and len(owned) == len(stores) else None,
        )
        summary = summarize_window(
            cell,
            found,
            start,
            end,
            server_cpu_s=server_cpu,
            store_cpu_s=store_cpu,
            locust_cpu_percent=locust_cpu_percent(sampler, start, end, self._locust_cores),
        )
        notes = [] if found.complete else [partial_note(found.coverage)]
        if self.load.remote_server:
            notes.append(CPU_UNAVAILABLE)
        if locust.workers_over_cpu():
            # Remote workers' CPU is not sampled here; Locust's own report of it is.
            summary["generator_bound"] = True
            notes.append("a Locust worker reported CPU above 90 %")
        return {
            "status": CellStatus.OK.value,
            "detail": "; ".join(notes),
            **summary,
            **extra,
            # The span the CPU figures cover, and the CPU itself, for whoever reanalyses the cell.
            "window_start": start,
            "window_end": end,
            "server_cpu_s": server_cpu,
            "store_cpu_s": store_cpu,
            "cpu_accounting": "unavailable: remote server"
            if self.load.remote_server
            else "measured",
            "locust_workers": self.load.topology.workers,
        }

    def _steps(self, records: list[Record], sampler: ResourceSampler) -> list[dict[str, Any]]:
        """Return per-step load, latency and which side was saturated, for a `max` run."""
        first = min(r.t_start for r in records)
        server_cores = len(self.load.server_cores or []) or (os.cpu_count() or 1)
        steps = []
        for i, users in enumerate(MAX_STEPS):
            start = first + i * self.load.profile.duration + STEP_RAMP_SECONDS
            end = first + (i + 1) * self.load.profile.duration
            inside = [r for r in records if start <= r.t_start < end]
            span = end - start
            server_pct = (
                math.nan
                if self.load.remote_server
                else 100 * sampler.cpu_between("server", start, end) / span / server_cores
            )
            locust_pct = locust_cpu_percent(sampler, start, end, self._locust_cores)
            saturated = (
                "server"
                if server_pct >= SATURATED_PERCENT
                else "generator"
                if locust_pct >= SATURATED_PERCENT
                else "unknown (remote server)"
                if self.load.remote_server
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
