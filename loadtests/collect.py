"""Per-request records of distributed runs: merged per cell, and summarized even when partial.

Each Locust worker writes ``requests-w<i>.csv.gz`` (see the locustfile). Workers on this
machine, or on machines sharing the results folder (docker compose), write straight into the
cell; the runner merges them into ``requests.csv.gz`` as soon as Locust has exited. Workers on
other machines write on their own disks: until their files are copied into the cells and
``python -m loadtests merge RUN_DIR`` is run, a cell's records are partial, and its request
count, failures and rate come from Locust's own statistics (which the master collects from
every worker) while latency and bytes come from the records at hand.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.locust_process import history_counts, history_first_request
from loadtests.resources import ResourceSampler, Sample
from loadtests.results import (
    Record,
    merge_records,
    read_records,
    summarize,
    window,
    worker_record_files,
    write_json,
    write_summary_csv,
)

RECORDS_FILE = "requests.csv.gz"
COMPLETE = "complete"


@dataclass(frozen=True)
class CellRecords:
    """The records of one cell and whether they cover every worker."""

    records: list[Record]
    coverage: str
    """``complete``, or ``partial: k of N workers`` when some workers' files are elsewhere."""

    @property
    def complete(self) -> bool:
        """True when every request of the cell is in `records`."""
        return self.coverage == COMPLETE


def collect_records(cell: Path, workers: int) -> CellRecords:
    """Return the cell's records, first merging its per-worker files into ``requests.csv.gz``.

    With `workers` 0 (one Locust process) the file is read as written. Once every worker's
    file is merged the parts are deleted; while some are missing the parts stay, so that a
    later merge can start again from them. Raises ValueError for mismatched files.
    """
    out = cell / RECORDS_FILE
    if workers == 0:
        return CellRecords(read_records(out) if out.exists() else [], COMPLETE)
    parts = worker_record_files(cell)
    if not parts:
        # Merged earlier and complete (parts deleted), or no worker wrote here at all.
        done = out.exists() and _coverage(cell) == COMPLETE
        return CellRecords(
            read_records(out) if done else [], COMPLETE if done else _partial(0, workers)
        )
    merge_records(parts, out)
    coverage = COMPLETE if len(parts) >= workers else _partial(len(parts), workers)
    if coverage == COMPLETE:
        for part in parts:
            part.unlink()
    return CellRecords(read_records(out), coverage)


def _partial(have: int, workers: int) -> str:
    return f"partial: {have} of {workers} workers"


def _coverage(cell: Path) -> str:
    try:
        return str(json.loads((cell / "summary.json").read_text()).get("records", COMPLETE))
    except (OSError, ValueError):
        return COMPLETE


def cell_window(
    cell: Path, found: CellRecords, warmup: float, duration: float
) -> tuple[float, float] | None:
    """Return (start, end) of a latency cell's window: after the warm-up from the first request.

    The first request is taken from the records, or, when none are here, from Locust's
    history (to the second). None if nothing was counted at all.
    """
    if found.records:
        return window(found.records, warmup, duration)
    first = history_first_request(cell)
    return None if first is None else (first + warmup, first + warmup + duration)


def window_cpu(
    sampler: ResourceSampler, start: float, end: float, *, server: bool, stores: list[str] | None
) -> tuple[float, float | None]:
    """Return (server, store) CPU seconds over [start, end] from the samples.

    The server's is NaN unless `server` (it ran elsewhere); the stores' is None when
    `stores` is None (not all of them are ours to see), the sum of those groups otherwise.
    """
    server_cpu = sampler.cpu_between("server", start, end) if server else math.nan
    if stores is None:
        return server_cpu, None
    return server_cpu, sum(sampler.cpu_between(g, start, end) for g in stores)


def summarize_window(
    cell: Path,
    found: CellRecords,
    start: float,
    end: float,
    *,
    server_cpu_s: float,
    store_cpu_s: float | None,
    locust_cpu_percent: float,
) -> dict[str, Any]:
    """Return the summary fields of the requests that started in [start, end).

    With partial records, requests, failures, rate and CPU per request use Locust's counts
    over the window; latency and bytes use the records present (a sample of the same load).
    """
    summary = summarize(
        found.records,
        start=start,
        end=end,
        server_cpu_s=server_cpu_s,
        store_cpu_s=store_cpu_s,
        locust_cpu_percent=locust_cpu_percent,
    )
    summary["records"] = found.coverage
    counts = None if found.complete else history_counts(cell, start, end)
    if counts is None:
        return summary
    n, failures = counts
    return summary | {
        "requests": n,
        "failures": failures,
        "achieved_rps": n / (end - start),
        "server_cpu_percent": 100 * server_cpu_s / (end - start),
        "cpu_us_per_req_server": 1e6 * server_cpu_s / n if n else math.nan,
        "cpu_us_per_req_store": (
            1e6 * store_cpu_s / n if n and store_cpu_s is not None else math.nan
        ),
    }


def partial_note(coverage: str) -> str:
    """Return the summary's note for records that do not cover every worker."""
    return (
        f"per-request records {coverage} (the others are on the workers' machines): counts from "
        "Locust's statistics, latency and bytes from the records here (copy the workers' "
        "requests-w*.csv.gz into this cell, then run `python -m loadtests merge RUN_DIR`)"
    )


def merge_run(run_dir: Path) -> list[str]:
    """Merge copied worker records into every partial cell of `run_dir` and re-summarize it.

    Returns one line per cell touched. The window is taken again from the merged records and
    the CPU over it from the cell's ``resources.csv``; only latency-mode cells are
    re-summarized (a max-mode cell gets its merged file). Raises ValueError if `run_dir` is
    not a run folder.
    """
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{run_dir} is not a run folder (no readable manifest.json)") from None
    workers = int(manifest.get("locust", {}).get("workers", 0))
    rows: list[dict[str, Any]] = []
    touched: list[str] = []
    for path in sorted(run_dir.glob("*/*/r*/summary.json")):
        row = json.loads(path.read_text())
        cell = path.parent
        if workers and row.get("records", COMPLETE) != COMPLETE and worker_record_files(cell):
            row = _resummarize(cell, row, workers, manifest)
            write_json(path, row)
            touched.append(f"{cell.relative_to(run_dir)}: records {row['records']}")
        rows.append(row)
    write_summary_csv(run_dir / "summary.csv", _in_run_order(run_dir, rows))
    return touched


def _resummarize(
    cell: Path, row: dict[str, Any], workers: int, manifest: dict[str, Any]
) -> dict[str, Any]:
    profile = manifest["profile"]
    pinned = manifest.get("pinning", {}).get("locust_and_runner") or []
    locust_cores = len(pinned) or int(manifest.get("machine", {}).get("cores") or 1)
    found = collect_records(cell, workers)
    if row.get("mode") != "latency":
        return {**row, "records": found.coverage}
    # The window now comes from the records themselves (at run time it may have come from
    # Locust's history, which lags by a report interval); the CPU over it from the samples.
    span = cell_window(cell, found, float(profile["warmup_s"]), float(profile["duration_s"]))
    if span is None:
        return row
    start, end = span
    sampler = read_resources(cell / "resources.csv")
    measured = row.get("cpu_accounting", "measured") == "measured"
    stores = [g for g in sampler.samples if g.startswith("store:")]
    server_cpu, store_cpu = window_cpu(
        sampler,
        start,
        end,
        server=measured,
        stores=stores if measured and row.get("store_cpu_s") is not None else None,
    )
    summary = summarize_window(
        cell,
        found,
        start,
        end,
        server_cpu_s=server_cpu,
        store_cpu_s=store_cpu,
        locust_cpu_percent=locust_cpu_percent(sampler, start, end, locust_cores),
    )
    notes = [n for n in str(row.get("detail", "")).split("; ") if n and "records partial" not in n]
    if not found.complete:
        notes.append(partial_note(found.coverage))
    # Generator-bound may also have come from the workers' own CPU reports: keep it if so.
    bound = bool(row.get("generator_bound")) or bool(summary["generator_bound"])
    return {
        **row,
        **summary,
        "generator_bound": bound,
        "detail": "; ".join(notes),
        "window_start": start,
        "window_end": end,
        "server_cpu_s": server_cpu,
        "store_cpu_s": store_cpu,
    }


def read_resources(path: Path) -> ResourceSampler:
    """Return a (stopped) sampler holding the samples of a ``resources.csv``."""
    sampler = ResourceSampler({})
    try:
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                sample = Sample(
                    float(r["t"]), r["group"], float(r["cpu_seconds"]), int(r["rss_bytes"])
                )
                sampler.samples.setdefault(sample.group, []).append(sample)
    except (OSError, KeyError, ValueError):
        pass
    return sampler


def locust_cpu_percent(sampler: ResourceSampler, start: float, end: float, cores: int) -> float:
    """Return how busy the local load generator was over [start, end], in % of one core.

    Each Locust process is one gevent thread, so the generator is bound when its busiest
    process is (``locust:*`` groups, one per process of a distributed run), or when its
    processes together fill the `cores` they share: the higher of the two.
    """
    if end <= start or "locust" not in sampler.samples:
        return math.nan
    span = end - start
    groups = [g for g in sampler.samples if g.startswith("locust:")] or ["locust"]
    busiest = max(100 * sampler.cpu_between(g, start, end) / span for g in groups)
    shared = 100 * sampler.cpu_between("locust", start, end) / span / max(1, cores)
    return max(busiest, shared)


def _in_run_order(run_dir: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return `rows` in the order of the run's existing summary.csv (the order they ran)."""
    try:
        with (run_dir / "summary.csv").open(newline="") as f:
            order = [(r["config"], r["scenario"], r["repeat"]) for r in csv.DictReader(f)]
    except (OSError, KeyError):
        return rows
    rank = {key: i for i, key in enumerate(order)}

    def key(row: dict[str, Any]) -> int:
        return rank.get((row["config"], row["scenario"], str(row["repeat"])), len(rank))

    return sorted(rows, key=key)
