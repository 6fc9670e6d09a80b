"""Locust as children of the runner: one headless process, or a master and its workers.

Distributed runs use Locust's own master/worker protocol. The runner always runs the master
(pinned with the load generator, never on the server's cores); workers are either started
here on loopback or, with a master host, started by the user on other machines.

Local workers are separate ``locust --worker`` processes, not ``locust --processes N`` forks:
each is started exactly as a remote worker is (no ``AUTHBENCH_*`` environment: the cell's
scenario, rate and records path reach it from the master, see the locustfile), and each has
its own pid and log, so its CPU is accounted on its own (a generator is bound by its busiest
single-threaded process, not by their sum) and it is stopped on its own.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.resources import process_tree, stop_group
from loadtests.stores import HOST, free_port

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_MASTER_PORT = 5557
# Past its run time, Locust gets this long to write its files before it is killed.
LOCUST_GRACE_SECONDS = 60.0
# How long a master waits for its workers: local ones start in seconds; remote ones may be
# restarting after the previous cell's master told them to quit.
LOCAL_WORKERS_WAIT_SECONDS = 60
REMOTE_WORKERS_WAIT_SECONDS = 300
# Once the master is gone, workers get this long to write their records and exit.
WORKER_EXIT_SECONDS = 15.0
# Remote workers sharing the results folder (compose) write their records just after the
# master exits; this long is given for their files to appear.
REMOTE_RECORDS_SECONDS = 3.0
STOP_SECONDS = 10.0
# What a master logs when a worker reports its CPU above Locust's 90 % threshold.
WORKER_CPU_WARNING = "exceeded cpu threshold"


@dataclass(frozen=True, kw_only=True)
class Topology:
    """How Locust is laid out: one process, or a master with `workers` workers."""

    workers: int = 0
    """Workers the master waits for; 0 runs one headless Locust process."""
    master_host: str | None = None
    """Address the master binds for workers on other machines; None starts workers here."""
    master_port: int = DEFAULT_MASTER_PORT
    """Port of the master for remote workers (local ones get a free port)."""

    @property
    def distributed(self) -> bool:
        """True when a master drives workers."""
        return self.workers > 0

    @property
    def local_workers(self) -> int:
        """Return how many workers the runner starts itself."""
        return 0 if self.master_host else self.workers

    def describe(self) -> dict[str, Any]:
        """Return the layout as plain data, for the manifest."""
        if not self.distributed:
            return {"mode": "single process", "workers": 0}
        where = f"remote, master on {self.master_host}:{self.master_port}"
        return {
            "mode": "master/worker",
            "workers": self.workers,
            "workers_where": where if self.master_host else "local (loopback)",
        }


def _preexec(cores: set[int] | None) -> Callable[[], None] | None:
    if not cores:
        return None
    return lambda: os.sched_setaffinity(0, cores)


class LocustProcess:
    """One headless Locust run (a single process, or a master and its local workers)."""

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
        topology: Topology | None = None,
        spawn_rate: float | None = None,
    ) -> None:
        self.topology = topology or Topology()
        locust = str(Path(sys.executable).with_name("locust"))
        self._cmd = [
            locust, "-f", str(LOCUSTFILE),
            "--headless",
            "--only-summary",
            "-u", str(users),
            "-r", f"{spawn_rate or users:g}",
            "--run-time", f"{max(1, round(run_time))}s",
            "--host", base_url,
            "--csv", str(cell / "locust"),
            "--exit-code-on-error", "0",
        ]  # fmt: skip
        wait = 0
        self._port = 0
        if self.topology.distributed:
            t = self.topology
            self._port = t.master_port if t.master_host else free_port()
            wait = REMOTE_WORKERS_WAIT_SECONDS if t.master_host else LOCAL_WORKERS_WAIT_SECONDS
            self._cmd += [
                "--master",
                "--master-bind-host", t.master_host or HOST,
                "--master-bind-port", str(self._port),
                "--expect-workers", str(t.workers),
                "--expect-workers-max-wait", str(wait),
            ]  # fmt: skip
        self._cmd.append(user_class)
        self._worker_cmd = [locust, "-f", str(LOCUSTFILE), "--worker"]
        self._env = {**os.environ, **env}
        self._cell = cell
        self._cores = cores
        self._proc: subprocess.Popen[bytes] | None = None
        self._workers: list[subprocess.Popen[bytes]] = []
        self._started = 0.0
        self._master_gone: float | None = None
        self._deadline = run_time + wait + LOCUST_GRACE_SECONDS

    def _spawn(
        self, cmd: list[str], env: Mapping[str, str], log_name: str
    ) -> subprocess.Popen[bytes]:
        with (self._cell / log_name).open("wb") as log:
            return subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_preexec(self._cores),
                start_new_session=True,
            )

    def start(self) -> None:
        """Start Locust: the master (or single process) first, then any local workers."""
        self._proc = self._spawn(self._cmd, self._env, "locust.log")
        self._started = time.monotonic()
        # Local workers get no AUTHBENCH_* variables, as a worker on another machine has none:
        # everything about the cell reaches them from the master.
        worker_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBENCH_")}
        worker_cmd = [*self._worker_cmd, "--master-host", HOST, "--master-port", str(self._port)]
        try:
            for k in range(1, self.topology.local_workers + 1):
                self._workers.append(self._spawn(worker_cmd, worker_env, f"locust-worker{k}.log"))
        except BaseException:
            self.stop()
            raise

    def pids(self) -> list[int]:
        """Return the pids of every local Locust process (master, workers and their children)."""
        procs = [self._proc, *self._workers] if self._proc else []
        return [pid for p in procs for pid in process_tree(p.pid)]

    def process_groups(self) -> dict[str, Callable[[], list[int]]]:
        """Return {group name: pid source} of each local Locust process, to sample separately.

        Callable before `start`: each source yields nothing until its process exists.
        """
        groups = {"locust:main": self._tree_of(0)}
        for k in range(1, self.topology.local_workers + 1):
            groups[f"locust:worker{k}"] = self._tree_of(k)
        return groups

    def _tree_of(self, k: int) -> Callable[[], list[int]]:
        def pids() -> list[int]:
            procs = [self._proc, *self._workers] if self._proc else []
            return process_tree(procs[k].pid) if k < len(procs) else []

        return pids

    def elapsed(self) -> float:
        """Return seconds since start."""
        return time.monotonic() - self._started

    def wait(self, timeout: float) -> bool:
        """Return True once the master and every local worker have exited.

        Kills them past their deadline; on KeyboardInterrupt stops them and re-raises.
        """
        assert self._proc is not None
        try:
            if self._master_gone is None:
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    if self.elapsed() > self._deadline:
                        self.stop()
                        return True
                    return False
                self._master_gone = time.monotonic()
            if self.remote:
                self._await_remote_records()
            # Workers write their records after the master's quit message: wait for them.
            for worker in self._workers:
                left = self._master_gone + WORKER_EXIT_SECONDS - time.monotonic()
                try:
                    worker.wait(max(0.0, min(left, timeout)))
                except subprocess.TimeoutExpired:
                    if left <= timeout:
                        self.stop()
                        return True
                    return False
            return True
        except KeyboardInterrupt:
            self.stop()
            raise

    def _await_remote_records(self) -> None:
        deadline = time.monotonic() + REMOTE_RECORDS_SECONDS
        while time.monotonic() < deadline:
            if len(list(self._cell.glob("requests-w*.csv.gz"))) >= self.topology.workers:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the master (which tells its workers to quit), then any worker still running.

        SIGINT first, so that Locust writes its statistics and records before it exits.
        """
        if self._proc is not None:
            stop_group(self._proc, signal.SIGINT, STOP_SECONDS)
        for worker in self._workers:
            stop_group(worker, signal.SIGINT, STOP_SECONDS)

    @property
    def remote(self) -> bool:
        """True when the workers run on other machines (their records stay there)."""
        return self.topology.master_host is not None

    @property
    def returncode(self) -> int | None:
        """The master's (or single process's) exit status, once it has exited."""
        return self._proc.returncode if self._proc else None

    def live_stats(self) -> tuple[float | None, int | None]:
        """Return (current req/s, failures so far) from Locust's stats history, if written."""
        rows = _aggregated_history(self._cell / "locust_stats_history.csv")
        if len(rows) < 2:
            return None, None
        # Locust's own Requests/s averages over a trailing window and lags for seconds; the
        # difference of the running totals of the last two rows is the rate right now.
        try:
            prev, last = rows[-2], rows[-1]
            seconds = float(last["Timestamp"]) - float(prev["Timestamp"])
            done = int(last["Total Request Count"]) - int(prev["Total Request Count"])
            rate = done / seconds if seconds > 0 else None
            return rate, int(last["Total Failure Count"])
        except (KeyError, ValueError):
            return None, None

    def log_tail(self, lines: int = 3) -> str:
        """Return the last lines of the master's (or single process's) output."""
        return _tail(self._cell / "locust.log", lines)

    def workers_over_cpu(self) -> bool:
        """Return True if the master was told that a worker ran above Locust's CPU threshold."""
        try:
            return WORKER_CPU_WARNING in (self._cell / "locust.log").read_text(errors="replace")
        except OSError:
            return False


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


def _aggregated_history(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    except OSError:
        return []


def history_counts(cell: Path, start: float, end: float) -> tuple[int, int] | None:
    """Return (requests, failures) Locust counted between two epoch times, or None.

    Read from ``locust_stats_history.csv`` (totals once a second, interpolated), which the
    master fills from every worker's reports: used when not every worker's per-request
    records are at hand. None when the history has fewer than two rows.
    """
    points: list[tuple[float, float, float]] = []
    for row in _aggregated_history(cell / "locust_stats_history.csv"):
        try:
            t = float(row["Timestamp"])
            points.append((t, float(row["Total Request Count"]), float(row["Total Failure Count"])))
        except (KeyError, ValueError):
            continue
    if len(points) < 2:
        return None

    def at(t: float, column: int) -> float:
        before = [p for p in points if p[0] <= t] or points[:1]
        after = [p for p in points if p[0] >= t] or points[-1:]
        a, b = before[-1], after[0]
        if b[0] == a[0]:
            return a[column]
        return a[column] + (b[column] - a[column]) * (t - a[0]) / (b[0] - a[0])

    return round(at(end, 1) - at(start, 1)), round(at(end, 2) - at(start, 2))


def history_first_request(cell: Path) -> float | None:
    """Return the epoch second of the first history row with a request counted, or None."""
    for row in _aggregated_history(cell / "locust_stats_history.csv"):
        try:
            if float(row["Total Request Count"]) > 0:
                return float(row["Timestamp"])
        except (KeyError, ValueError):
            continue
    return None
