"""Small result folders written the way the bench runner writes them, without any load.

The manifest, summary.csv, summary.json and steps.csv come from the runner's own code
(`Runner._start_manifest`, `Runner._row`, `Runner._steps`, `summarize`), resources.csv from
`ResourceSampler.write_csv`, so a format change in loadtests shows up here. Only
requests.csv.gz is written by hand (its writer lives in the locustfile, which cannot be
imported here: gevent), with the columns the locustfile takes from `loadtests.results`.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.config import Profile, load
from loadtests.resources import ResourceSampler, Sample
from loadtests.results import (
    RECORD_COLUMNS,
    Record,
    latency_stats,
    summarize,
    window,
    write_json,
    write_step_csv,
)
from loadtests.runner import Runner

try:  # the step constants moved with the runner's split into measure.py
    from loadtests.measure import MAX_STEPS, STEP_RAMP_SECONDS
except ImportError:  # pragma: no cover - older layout
    from loadtests.runner import MAX_STEPS, STEP_RAMP_SECONDS  # type: ignore[attr-defined,no-redef]

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0
TAIL_SECONDS = 1.0


def record_columns() -> tuple[str, ...]:
    """Return the columns of requests.csv.gz, as the locustfile writes them."""
    return RECORD_COLUMNS


@dataclass(frozen=True)
class Behaviour:
    """How one configuration × scenario × repeat performs in a fabricated run."""

    latency_ms: float = 2.0
    """Median latency; requests are log-normal around it."""
    server_us: float = 300.0
    store_us: float | None = 40.0
    credential_bytes: int = 54
    auth_ms: float = 0.3
    store_ms: float | None = 0.2
    locust_cpu_percent: float = 20.0
    achieved_share: float = 1.0
    """Share of the offered rate that was served (below 0.9 = fell behind)."""
    status: str = "ok"
    detail: str = ""


BehaviourOf = Callable[[str, str, int], Behaviour]


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


def _names(scenario: str, n: int) -> list[str]:
    if scenario == "login":
        return [("/login", "/me", "/logout")[i % 3] for i in range(n)]
    return ["/login", *["/me"] * (n - 1)]


def fabricate_records(
    behaviour: Behaviour, scenario: str, *, rate: float, seconds: float, seed: int
) -> list[Record]:
    """Return evenly paced records over `seconds` at `rate` × achieved share."""
    rng = np.random.default_rng(seed)
    n = max(2, int(rate * behaviour.achieved_share * seconds))
    latencies = behaviour.latency_ms * rng.lognormal(0.0, 0.5, n)
    out = []
    for i, (name, latency) in enumerate(zip(_names(scenario, n), latencies, strict=True)):
        me = name == "/me"
        cred = behaviour.credential_bytes if me else 0
        out.append(
            Record(
                t_start=T0 + i * seconds / n,
                name=name,
                status=200,
                ok=True,
                latency_ms=float(latency),
                request_head_bytes=(134 + cred) if me else 206,
                credential_bytes=cred,
                response_bytes=250,
                st_auth=behaviour.auth_ms if me else None,
                st_store=behaviour.store_ms if me else None,
            )
        )
    return out


def write_records(path: Path, records: Sequence[Record]) -> None:
    """Write requests.csv.gz in the locustfile's column order."""
    with gzip.open(path, "wt", newline="") as f:
        out = csv.writer(f)
        out.writerow(record_columns())
        for r in records:
            row: dict[str, Any] = {
                "t_start": repr(r.t_start),
                "name": r.name,
                "method": "POST" if r.name != "/me" else "GET",
                "status": r.status,
                "ok": int(r.ok),
                "latency_ms": repr(r.latency_ms),
                "request_head_bytes": r.request_head_bytes,
                "credential_bytes": r.credential_bytes,
                "response_bytes": r.response_bytes,
                "st_auth": "" if r.st_auth is None else f"{r.st_auth:.3f}",
                "st_store": "" if r.st_store is None else f"{r.st_store:.3f}",
                "st_pw": "",
                "st_issue": "",
                "error": "",
            }
            out.writerow([row[c] for c in record_columns()])


def _sampler(records: Sequence[Record], b: Behaviour, stores: bool) -> ResourceSampler:
    """Return a sampler whose cumulative CPU makes exactly `b`'s µs per request."""
    groups = ["server", "locust", *(["store:redis"] if stores else [])]
    sampler = ResourceSampler({g: list for g in groups})
    times = [r.t_start for r in records]
    end = max(times) + TAIL_SECONDS
    per_req = {"server": b.server_us, "store:redis": b.store_us or 0.0}
    for group in groups:
        samples = []
        for t in np.arange(T0 - 0.5, end + 0.5, 0.5):
            done = sum(1 for x in times if x < t)
            if group == "locust":
                cpu = (t - T0) * b.locust_cpu_percent / 100
            else:
                cpu = done * per_req[group] / 1e6
            samples.append(Sample(float(t), group, max(cpu, 0.0), 50_000_000))
        sampler.samples[group] = samples
    return sampler


def make_run(
    root: Path,
    configs: Sequence[str],
    *,
    name: str = "run",
    scenarios: Sequence[str] = ("browse",),
    repeat: int = 1,
    mode: str = "latency",
    rate: float = 200.0,
    warmup: float = 1.0,
    duration: float = 2.0,
    behaviour: BehaviourOf = lambda _c, _s, _r: Behaviour(),
    dependency_hash: str | None = None,
    record_window: bool = True,
) -> Path:
    """Write a complete run folder `root/name` for configurations of loadtests/configs.toml.

    Per-request records and CPU samples are fabricated from `behaviour`; everything else
    is written by the runner's own code. `record_window` False leaves window_start/end out
    of summary.json, as runs made before they were recorded. Returns the run folder.
    """
    bench = load()
    profile = Profile(
        name="test",
        configs=tuple(configs),
        scenarios=tuple(scenarios),
        rate=dict.fromkeys(scenarios, rate),
        users=8,
        warmup=warmup,
        duration=duration,
        repeat=repeat,
    )
    runner = Runner(bench, profile, root, mode=mode)
    runner.run_dir = root / name
    runner.run_dir.mkdir(parents=True)
    runner._start_manifest()
    if dependency_hash is not None:
        runner.manifest["dependency_hash"] = dependency_hash
    for config, k in runner.plan():
        for scenario in scenarios:
            b = behaviour(config.name, scenario, k)
            _measure(runner, config, scenario, k, b, record_window)
    runner._finish(True)
    return runner.run_dir


def _measure(
    runner: Runner, config: Any, scenario: str, k: int, b: Behaviour, record_window: bool
) -> None:
    p = runner.profile
    cell = runner._cell_dir(config, scenario, k)
    write_json(cell / "verify.json", [{"check": "health", "outcome": "passed", "detail": ""}])
    if b.status != "ok":
        runner._row(config, scenario, k, status=b.status, detail=b.detail)
        return
    seed = _seed(config.name, scenario, k)
    if runner.mode == "max":
        records = []
        for i, users in enumerate(MAX_STEPS):
            step = dataclasses.replace(b, latency_ms=b.latency_ms * math.sqrt(users))
            part = fabricate_records(
                step,
                scenario,
                rate=p.rate[scenario] * math.sqrt(users),
                seconds=p.duration,
                seed=seed + i,
            )
            records += [dataclasses.replace(r, t_start=r.t_start + i * p.duration) for r in part]
    else:
        records = fabricate_records(
            b, scenario, rate=p.rate[scenario], seconds=p.warmup + p.duration, seed=seed
        )
    write_records(cell / "requests.csv.gz", records)
    sampler = _sampler(records, b, stores=b.store_us is not None)
    if runner.mode == "max":
        steps = _steps(records, p.duration, b)
        write_step_csv(cell / "steps.csv", steps)
        best = max(steps, key=lambda s: s["achieved_rps"])
        start, end = best["start"], best["end"]
        extra = {"mode": "max", "capacity_rps": best["achieved_rps"], "saturated": "server"}
    else:
        start, end = window(records, p.warmup, p.duration)
        extra = {"mode": "latency"}
    summary = summarize(
        records,
        start=start,
        end=end,
        server_cpu_s=sampler.cpu_between("server", start, end),
        store_cpu_s=(
            sampler.cpu_between("store:redis", start, end) if b.store_us is not None else None
        ),
        locust_cpu_percent=b.locust_cpu_percent,
    )
    sampler.write_csv(cell / "resources.csv")
    if record_window:
        extra |= {"window_start": start, "window_end": end}
    runner._row(config, scenario, k, status="ok", detail="", **summary, **extra)


def _steps(records: Sequence[Record], duration: float, b: Behaviour) -> list[dict[str, Any]]:
    """Return the steps of a max run as the runner computes them (window per step)."""
    first = min(r.t_start for r in records)
    steps = []
    for i, users in enumerate(MAX_STEPS):
        start = first + i * duration + STEP_RAMP_SECONDS
        end = first + (i + 1) * duration
        inside = [r for r in records if start <= r.t_start < end]
        steps.append(
            {
                "users": users,
                "start": start,
                "end": end,
                "achieved_rps": len(inside) / (end - start),
                "failures": sum(1 for r in inside if not r.ok),
                **latency_stats(inside),
                "server_cpu_percent": min(100.0, 20.0 * math.sqrt(users)),
                "locust_cpu_percent": b.locust_cpu_percent,
                "saturated": "server" if users >= 16 else "neither",
            }
        )
    return steps
