"""Pure loaders: one run folder (`results/<run-id>/`) in, pandas DataFrames out.

Nothing here writes, caches or draws. Every loader raises a `RunError` subclass with a
one-line message when the folder or the file it needs is not what the runner writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.options import OPTION_COLUMNS, config_options
from loadtests.results import NUMERIC_COLUMNS

SUMMARY_NUMERIC = ("repeat", *NUMERIC_COLUMNS)
REQUEST_DTYPES: dict[str, Any] = {
    "t_start": "float64",
    "name": "string",
    "method": "string",
    "status": "int64",
    "ok": "int64",
    "latency_ms": "float64",
    "request_head_bytes": "int64",
    "credential_bytes": "int64",
    "response_bytes": "int64",
    "st_auth": "float64",
    "st_store": "float64",
    "st_pw": "float64",
    "st_issue": "float64",
    "error": "string",
}
# `max` mode: the first second of each step is ramp-up and is not measured (runner.py).
STEP_RAMP_SECONDS = 1.0


class RunError(Exception):
    """Raised when a folder is not a readable authbench run; the message is one line."""


class NotARun(RunError):
    """Raised for a folder without the manifest.json and summary.csv the runner writes."""


class UnknownCell(RunError):
    """Raised for a configuration, scenario or repeat that the run does not hold."""


class MissingData(RunError):
    """Raised when a per-measurement file (requests, resources, steps) is absent."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_manifest(run: Path) -> dict[str, Any]:
    """Return the run's manifest.json as a dict.

    Raises NotARun if `run` is not a folder holding a readable JSON manifest with a run id.
    """
    run = Path(run)
    if not run.is_dir():
        raise NotARun(f"{run}: no such folder")
    path = run / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotARun(f"{run}: not an authbench run (no manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise NotARun(f"{run}: unreadable manifest.json ({_one_line(str(exc))})") from None
    if not isinstance(manifest, dict) or "configurations" not in manifest:
        raise NotARun(f"{run}: manifest.json is not an authbench manifest")
    return manifest


def load_summary(run: Path) -> pd.DataFrame:
    """Return summary.csv, one row per configuration × scenario × repeat, typed.

    Numeric columns are floats (NaN where empty), `repeat`/`requests`/`failures` too (NaN
    for cells that never ran); `generator_bound` is bool. Options of each configuration from
    the manifest are added as columns (see `analysis.options.config_options`): alg,
    transport, extra_claims, refresh_store, denylist_store, sliding, pool_size, store,
    access_ttl_s, sweep. Rows keep the manifest's configuration order.
    Raises NotARun if the folder is not a run or summary.csv is missing or malformed.
    """
    run = Path(run)
    manifest = load_manifest(run)
    path = run / "summary.csv"
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise NotARun(f"{run}: not an authbench run (no summary.csv)") from None
    except (OSError, ValueError) as exc:
        raise NotARun(f"{run}: unreadable summary.csv ({_one_line(str(exc))})") from None
    missing = {"config", "scenario", "repeat", "status"} - set(df.columns)
    if missing:
        raise NotARun(f"{run}: summary.csv lacks column(s) {', '.join(sorted(missing))}")
    for column in SUMMARY_NUMERIC:
        if column in df:
            df[column] = pd.to_numeric(df[column].replace("", np.nan), errors="coerce")
    df["generator_bound"] = df.get("generator_bound", pd.Series("", index=df.index)) == "1"
    for column in ("backend", "mode", "saturated", "detail"):
        if column not in df:
            df[column] = ""
    configs = manifest["configurations"]
    options = pd.DataFrame(
        [config_options(name, configs.get(name, {})) for name in df["config"]],
        index=df.index,
        columns=list(OPTION_COLUMNS),
    )
    df = pd.concat([df, options.drop(columns=["backend"])], axis=1)
    order = {name: i for i, name in enumerate(configs)}
    df["_order"] = df["config"].map(order).fillna(len(order))
    df = df.sort_values(["_order", "scenario", "repeat"], kind="stable").drop(columns="_order")
    return df.reset_index(drop=True)


def load_run(run: Path) -> pd.DataFrame:
    """Return the run's summary with options (an alias of `load_summary`, DESIGN §6)."""
    return load_summary(run)


def cell_dir(run: Path, config: str, scenario: str, repeat: int = 1) -> Path:
    """Return the folder of one measurement; raises UnknownCell if the run lacks it."""
    run = Path(run)
    manifest = load_manifest(run)
    if config not in manifest["configurations"]:
        known = ", ".join(manifest["configurations"])
        raise UnknownCell(f"{run.name}: unknown configuration {config!r} (known: {known})")
    scenarios = manifest.get("profile", {}).get("scenarios", [])
    if scenarios and scenario not in scenarios:
        raise UnknownCell(
            f"{run.name}: unknown scenario {scenario!r} (known: {', '.join(scenarios)})"
        )
    path = run / config / scenario / f"r{repeat}"
    if not path.is_dir():
        raise UnknownCell(f"{run.name}: no measurement {config}/{scenario}/r{repeat}")
    return path


def load_requests(
    run: Path,
    config: str,
    scenario: str,
    repeat: int = 1,
    *,
    window: bool = False,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Return the per-request records of one measurement (requests.csv.gz), typed.

    `ok` is bool, Server-Timing columns (st_*) are floats with NaN where absent. With
    `window`, only the requests that started inside the measurement window are kept: the
    manifest's warm-up and duration after the first request (latency mode), or the best
    step of steps.csv (max mode), the same window summary.csv was computed over.
    `columns` limits the columns read (t_start is always read).
    Raises UnknownCell for an unknown cell and MissingData if the file is absent.
    """
    path = cell_dir(run, config, scenario, repeat) / "requests.csv.gz"
    wanted = list(REQUEST_DTYPES) if columns is None else ["t_start", *columns]
    na = {c: [""] for c in ("st_auth", "st_store", "st_pw", "st_issue")}
    try:
        df = pd.read_csv(
            path,
            usecols=lambda c: c in wanted,
            dtype={c: t for c, t in REQUEST_DTYPES.items() if c in wanted},
            keep_default_na=False,
            na_values=na,
        )
    except FileNotFoundError:
        raise MissingData(f"{config}/{scenario}/r{repeat}: no requests.csv.gz") from None
    except (OSError, ValueError, EOFError) as exc:
        raise MissingData(
            f"{config}/{scenario}/r{repeat}: unreadable requests.csv.gz ({_one_line(str(exc))})"
        ) from None
    if "ok" in df:
        df["ok"] = df["ok"].astype(bool)
    if "error" in df:
        df["error"] = df["error"].fillna("")
    if window and len(df):
        start, end = measurement_window(run, config, scenario, repeat, df)
        df = df[(df["t_start"] >= start) & (df["t_start"] < end)].reset_index(drop=True)
    return df


def measurement_window(
    run: Path, config: str, scenario: str, repeat: int, requests: pd.DataFrame
) -> tuple[float, float]:
    """Return (start, end) epoch seconds of the window summary.csv describes.

    The cell's summary.json records it (window_start / window_end) in current runs; for
    older runs it is rebuilt as the runner did: warm-up and duration after the first
    request (latency mode), or the best step of steps.csv (max mode).
    Raises MissingData if an older max-mode measurement has no steps.csv.
    """
    recorded = _recorded_window(cell_dir(run, config, scenario, repeat))
    if recorded is not None:
        return recorded
    profile = load_manifest(run).get("profile", {})
    first = float(requests["t_start"].min())
    duration = float(profile.get("duration_s", 0.0))
    if profile.get("mode") == "max":
        steps = load_steps(run, config, scenario, repeat)
        best = int(steps["achieved_rps"].to_numpy().argmax())
        return first + best * duration + STEP_RAMP_SECONDS, first + (best + 1) * duration
    warmup = float(profile.get("warmup_s", 0.0))
    return first + warmup, first + warmup + duration


def _recorded_window(cell: Path) -> tuple[float, float] | None:
    try:
        data = json.loads((cell / "summary.json").read_text())
        start, end = float(data["window_start"]), float(data["window_end"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (start, end) if end > start else None


def load_resources(run: Path, config: str, scenario: str, repeat: int = 1) -> pd.DataFrame:
    """Return resources.csv of one measurement: t, group, cpu_seconds, cpu_percent, rss_bytes.

    Raises UnknownCell for an unknown cell and MissingData if the file is absent.
    """
    path = cell_dir(run, config, scenario, repeat) / "resources.csv"
    try:
        df = pd.read_csv(path, dtype={"group": "string"})
    except FileNotFoundError:
        raise MissingData(f"{config}/{scenario}/r{repeat}: no resources.csv") from None
    for column in ("t", "cpu_seconds", "cpu_percent", "rss_bytes"):
        df[column] = pd.to_numeric(df[column], errors="coerce")
    return df


def load_steps(run: Path, config: str, scenario: str, repeat: int = 1) -> pd.DataFrame:
    """Return steps.csv of one max-mode measurement: users, achieved_rps, latency, CPU, saturated.

    Raises UnknownCell for an unknown cell and MissingData if the run has no steps there.
    """
    path = cell_dir(run, config, scenario, repeat) / "steps.csv"
    try:
        df = pd.read_csv(path, dtype={"saturated": "string"}, keep_default_na=False)
    except FileNotFoundError:
        raise MissingData(f"{config}/{scenario}/r{repeat}: no steps.csv (not a max run)") from None
    for column in df.columns:
        if column != "saturated":
            df[column] = pd.to_numeric(df[column].replace("", np.nan), errors="coerce")
    return df


def load_all_steps(run: Path) -> pd.DataFrame:
    """Return every steps.csv of the run with config, scenario, repeat and backend columns.

    Empty (no rows) when the run has no max-mode data. Raises NotARun for a non-run folder.
    """
    summary = load_summary(run)
    frames = []
    for row in summary.itertuples():
        try:
            steps = load_steps(run, str(row.config), str(row.scenario), int(row.repeat))
        except RunError:
            continue
        frames.append(
            steps.assign(
                config=row.config,
                scenario=row.scenario,
                repeat=int(row.repeat),
                backend=row.backend,
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_verify(run: Path, config: str, scenario: str, repeat: int = 1) -> list[dict[str, Any]]:
    """Return verify.json of one measurement (check, outcome, detail), or [] if absent.

    Raises UnknownCell for an unknown cell.
    """
    path = cell_dir(run, config, scenario, repeat) / "verify.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def load_window_latencies(run: Path, *, mode: str = "latency") -> pd.DataFrame:
    """Return the window's latency_ms of every measured cell of `mode`, repeats stacked.

    Columns: latency_ms, config, scenario, repeat, plus the options of `load_summary`
    (backend, alg, sweep, extra_claims …). Cells without records are skipped; the frame is
    empty when none has any. Raises NotARun for a folder that is not a run.
    """
    summary = load_summary(run)
    rows = summary[(summary["status"] == "ok") & (summary["mode"] == mode)]
    options = [c for c in OPTION_COLUMNS if c in summary]
    frames = []
    for row in rows.itertuples(index=False):
        cell = row._asdict()
        try:
            requests = load_requests(
                run,
                cell["config"],
                cell["scenario"],
                int(cell["repeat"]),
                window=True,
                columns=["latency_ms"],
            )
        except MissingData:
            continue
        extra = {k: cell[k] for k in ("config", "scenario", "repeat", *options)}
        frames.append(requests[["latency_ms"]].assign(**extra))
    if not frames:
        return pd.DataFrame(columns=["latency_ms", "config", "scenario", "repeat", *options])
    return pd.concat(frames, ignore_index=True)


def load_hot_path_bytes(run: Path) -> pd.DataFrame:
    """Return mean bytes of the window's GET /me requests per config × scenario × repeat.

    Columns: config, scenario, repeat, me_head_bytes, me_credential_bytes, me_response_bytes.
    summary.csv's request_head_bytes averages every request (logins included); these are
    the bytes of one authenticated read, what every further request of a visit costs.
    Cells without records or without /me requests are left out. Raises NotARun.
    """
    summary = load_summary(run)
    rows = summary[summary["status"] == "ok"]
    out = []
    wanted = ["name", "request_head_bytes", "credential_bytes", "response_bytes"]
    for row in rows.itertuples(index=False):
        try:
            requests = load_requests(
                run,
                str(row.config),
                str(row.scenario),
                int(row.repeat),
                window=True,
                columns=wanted,
            )
        except MissingData:
            continue
        me = requests[requests["name"] == "/me"]
        if me.empty:
            continue
        out.append(
            {
                "config": row.config,
                "scenario": row.scenario,
                "repeat": row.repeat,
                "me_head_bytes": float(me["request_head_bytes"].mean()),
                "me_credential_bytes": float(me["credential_bytes"].mean()),
                "me_response_bytes": float(me["response_bytes"].mean()),
            }
        )
    columns = [
        "config",
        "scenario",
        "repeat",
        "me_head_bytes",
        "me_credential_bytes",
        "me_response_bytes",
    ]
    return pd.DataFrame(out, columns=columns)
