"""CPU accounting, checked on processes whose CPU time is known."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from loadtests.resources import ResourceSampler, Sample, _cpu_at, process_tree

# Burns CPU until it has used the given seconds of its own CPU time, then idles.
BURNER = """
import sys, time
target = float(sys.argv[1])
while time.process_time() < target:
    pass
print(time.process_time(), flush=True)
time.sleep(30)
"""


def test_sampler_accounts_the_cpu_a_process_reports_for_itself() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", BURNER, "0.6"], stdout=subprocess.PIPE, text=True
    )
    try:
        with ResourceSampler({"burner": lambda: [proc.pid]}, interval=0.1) as sampler:
            assert proc.stdout is not None
            reported = float(proc.stdout.readline())
            time.sleep(0.3)
        t = psutil.Process(proc.pid).cpu_times()
        own = t.user + t.system
        start, end = sampler.samples["burner"][0].t, sampler.samples["burner"][-1].t
        measured = sampler.cpu_between("burner", start - 1, end + 1)
        # The sampler's total is the OS's own account (to the clock tick) and covers at
        # least what the process measured of itself.
        assert abs(measured - own) < 0.05
        assert measured >= reported - 0.05
        assert sampler.busiest_percent("burner", start, end) > 20
    finally:
        proc.kill()
        proc.wait()


def test_idle_process_uses_almost_no_cpu() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)  # let the interpreter finish starting
        with ResourceSampler({"idle": lambda: [proc.pid]}, interval=0.1) as sampler:
            time.sleep(0.5)
        rows = sampler.samples["idle"]
        assert sampler.cpu_between("idle", rows[0].t, rows[-1].t) < 0.02
    finally:
        proc.kill()
        proc.wait()


def test_interpolation_between_samples() -> None:
    rows = [Sample(10.0, "g", 1.0, 0), Sample(12.0, "g", 3.0, 0), Sample(14.0, "g", 3.0, 0)]
    assert _cpu_at(rows, 11.0) == 2.0
    assert _cpu_at(rows, 9.0) == 1.0
    assert _cpu_at(rows, 20.0) == 3.0
    assert _cpu_at([], 1.0) == 0.0


def test_cpu_of_an_exited_process_is_kept(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BURNER.replace("time.sleep(30)", ""), "0.3"])
    pids = [proc.pid]
    sampler = ResourceSampler({"g": lambda: pids}, interval=0.05)
    with sampler:
        proc.wait()
        time.sleep(0.2)
    rows = sampler.samples["g"]
    assert rows[-1].cpu_seconds >= max(r.cpu_seconds for r in rows) - 1e-9
    sampler.write_csv(tmp_path / "resources.csv")
    header = (tmp_path / "resources.csv").read_text().splitlines()[0]
    assert header == "t,group,cpu_seconds,cpu_percent,rss_bytes"


def test_process_tree_lists_children_and_forgets_the_dead() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess,sys,time; "
            "c=subprocess.Popen([sys.executable,'-c','import time; time.sleep(30)']); "
            "time.sleep(30)",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(process_tree(proc.pid)) == 2
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
    assert process_tree(proc.pid) == []
