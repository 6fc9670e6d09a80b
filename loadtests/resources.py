"""CPU and memory of the processes under test, sampled in the background.

CPU time is cumulative per group (server, each store, Locust), so the CPU spent inside any
window — the measurement window is known only afterwards — is a difference of two
interpolated samples.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

PidSource = Callable[[], list[int]]


@dataclass(frozen=True, slots=True)
class Sample:
    """One group's cumulative CPU seconds (user + system) and resident memory at a moment."""

    t: float
    group: str
    cpu_seconds: float
    rss_bytes: int


class ResourceSampler:
    """Samples every group's processes each `interval` seconds until stopped."""

    def __init__(self, groups: dict[str, PidSource], interval: float = 0.5) -> None:
        self._groups = groups
        self._interval = interval
        self._procs: dict[int, psutil.Process] = {}
        # A process that exits keeps contributing the CPU it had used, so totals never fall.
        self._last_cpu: dict[tuple[str, int], float] = {}
        self.samples: dict[str, list[Sample]] = {g: [] for g in groups}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)

    def __enter__(self) -> ResourceSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take a last sample and stop the thread; idempotent."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
            self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def _process(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
        return proc

    def sample(self) -> None:
        """Record one sample of every group now."""
        now = time.time()
        for group, pids in self._groups.items():
            rss = 0
            for pid in pids():
                try:
                    proc = self._process(pid)
                    with proc.oneshot():
                        t = proc.cpu_times()
                        self._last_cpu[(group, pid)] = t.user + t.system
                        rss += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            cpu = sum(v for (g, _), v in self._last_cpu.items() if g == group)
            self.samples[group].append(Sample(now, group, cpu, rss))

    def cpu_between(self, group: str, start: float, end: float) -> float:
        """Return the CPU seconds `group` used between two epoch times (interpolated)."""
        return _cpu_at(self.samples[group], end) - _cpu_at(self.samples[group], start)

    def busiest_percent(self, group: str, start: float, end: float) -> float:
        """Return the highest CPU % (of one core) of `group` over any sample interval in
        [start, end]."""
        rows = [s for s in self.samples[group] if start <= s.t <= end]
        peaks = [
            100 * (b.cpu_seconds - a.cpu_seconds) / (b.t - a.t)
            for a, b in itertools.pairwise(rows)
            if b.t > a.t
        ]
        return max(peaks, default=0.0)

    def write_csv(self, path: Path, start: float | None = None, end: float | None = None) -> None:
        """Write per-sample rows (t, group, cpu_seconds, cpu_percent, rss_bytes) to `path`."""
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["t", "group", "cpu_seconds", "cpu_percent", "rss_bytes"])
            for group, rows in self.samples.items():
                prev: Sample | None = None
                for s in rows:
                    if (start is None or s.t >= start) and (end is None or s.t <= end):
                        pct = (
                            100 * (s.cpu_seconds - prev.cpu_seconds) / (s.t - prev.t)
                            if prev is not None and s.t > prev.t
                            else 0.0
                        )
                        out.writerow(
                            [f"{s.t:.3f}", group, f"{s.cpu_seconds:.4f}", f"{pct:.1f}", s.rss_bytes]
                        )
                    prev = s


def _cpu_at(samples: list[Sample], t: float) -> float:
    if not samples:
        return 0.0
    times = [s.t for s in samples]
    i = bisect.bisect_left(times, t)
    if i == 0:
        return samples[0].cpu_seconds
    if i >= len(samples):
        return samples[-1].cpu_seconds
    a, b = samples[i - 1], samples[i]
    if b.t == a.t:
        return b.cpu_seconds
    return a.cpu_seconds + (b.cpu_seconds - a.cpu_seconds) * (t - a.t) / (b.t - a.t)


def process_tree(pid: int) -> list[int]:
    """Return `pid` and all its descendants' pids (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def stop_group(proc: subprocess.Popen[bytes], first: signal.Signals, timeout: float) -> None:
    """Send `first` to the process group of `proc`, then SIGKILL it after `timeout` seconds.

    Returns once the process has exited; does nothing if it already had.
    """
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, first)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
