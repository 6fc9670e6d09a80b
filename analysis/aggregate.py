"""Repeats folded into one row per configuration × scenario, and the run's facts as data."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.options import OPTION_COLUMNS
from loadtests.results import NUMERIC_COLUMNS

METRICS = (*NUMERIC_COLUMNS, "me_head_bytes", "me_credential_bytes", "me_response_bytes")
# Below this share of the offered rate the server (or generator) did not keep up. Arrivals
# are Poisson, so a few-second window alone strays by several percent (a login window of
# 480 tasks: ±4.5 % at one standard deviation); the margin leaves room for that.
KEPT_UP_SHARE = 0.85


def measured(summary: pd.DataFrame, mode: str | None = None) -> pd.DataFrame:
    """Return the rows that were measured (status ok), optionally of one mode only."""
    rows = summary[summary["status"] == "ok"]
    if mode is not None:
        rows = rows[rows["mode"] == mode]
    return rows


def by_cell(summary: pd.DataFrame, hot_path_bytes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return one row per configuration × scenario of the measured rows, repeats folded.

    `hot_path_bytes` (`analysis.load.load_hot_path_bytes`), when given, adds the me_*_bytes
    columns of GET /me requests.

    Each metric is the median over repeats, with `<metric>_min` / `<metric>_max` beside it;
    `repeats` counts them, `generator_bound` is true if any repeat was, `cpu_us_per_req`
    is server + store (store NaN counts as 0) and `kept_up` says whether the achieved rate
    reached KEPT_UP_SHARE of the offered one (always true in max mode); `detail` joins the
    rows' notes. Configuration order is kept.
    """
    rows = measured(summary)
    if hot_path_bytes is not None and not hot_path_bytes.empty:
        rows = rows.merge(hot_path_bytes, on=["config", "scenario", "repeat"], how="left")
    if rows.empty:
        return pd.DataFrame(columns=["config", "scenario", "repeats", *METRICS])
    keys = ["config", "scenario"]
    grouped = rows.groupby(keys, sort=False)
    present = [m for m in METRICS if m in rows]
    out = grouped[present].median()
    lows = grouped[present].min().add_suffix("_min")
    highs = grouped[present].max().add_suffix("_max")
    first = grouped[[c for c in (*OPTION_COLUMNS, "mode") if c in rows]].first()
    out = pd.concat([first, out, lows, highs], axis=1)
    out["repeats"] = grouped.size()
    out["generator_bound"] = grouped["generator_bound"].any()
    # Notes of measured rows (partial records, CPU not measurable), each said once.
    out["detail"] = grouped["detail"].agg(lambda s: "; ".join(dict.fromkeys(d for d in s if d)))
    out["cpu_us_per_req"] = out["cpu_us_per_req_server"] + out["cpu_us_per_req_store"].fillna(0)
    share = out["achieved_rps"] / out["offered_rps"]
    out["kept_up"] = (out["mode"] == "max") | (share >= KEPT_UP_SHARE)
    return out.reset_index()


def not_measured(summary: pd.DataFrame) -> pd.DataFrame:
    """Return config, scenario, repeat, status and detail of every row that is not ok."""
    rows = summary[summary["status"] != "ok"]
    return rows[["config", "scenario", "repeat", "status", "detail"]].reset_index(drop=True)


def scenarios(summary: pd.DataFrame) -> list[str]:
    """Return the scenarios of the run in first-seen order."""
    return list(dict.fromkeys(summary["scenario"]))


def primary_scenario(summary: pd.DataFrame) -> str | None:
    """Return the scenario per-configuration facts are quoted from: browse if measured.

    `browse` is the hot path (one authenticated read per request); otherwise the first
    measured scenario; None if nothing was measured.
    """
    names = scenarios(measured(summary))
    if not names:
        return None
    return "browse" if "browse" in names else names[0]


def method_facts(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (label, value) pairs describing how the run was made, for the report."""
    profile = manifest.get("profile", {})
    versions = manifest.get("versions", {})
    packages = versions.get("packages", {})
    stores = versions.get("stores", {})
    machine = manifest.get("machine", {})
    pinning = manifest.get("pinning", {})
    git = manifest.get("git", {})
    rates = ", ".join(f"{s}: {r:g} req/s" for s, r in profile.get("offered_rps", {}).items())
    mode = str(profile.get("mode", "latency"))
    mode += (
        f" (step load, users {profile.get('max_steps_users')})"
        if mode == "max"
        else " (fixed offered rate)"
    )
    dirty = {True: " (uncommitted changes)", False: ""}.get(git.get("dirty"), " (dirty unknown)")
    commit = str(git.get("commit") or "unknown")[:12] + dirty
    shuffled = ", order shuffled" if profile.get("shuffle") else ""
    cores = (
        f"server and stores on cores {pinning.get('server_and_stores') or 'any'}; "
        f"Locust on {pinning.get('locust_and_runner') or 'any'}"
    )
    span = f"{manifest.get('started_utc')} → {manifest.get('ended_utc')} UTC"
    return [
        ("Run", f"{manifest.get('run_id')} ({span})"),
        ("Complete", "yes" if manifest.get("complete") else "NO — the run was interrupted"),
        ("Profile", f"{profile.get('name')}: {profile.get('description', '')}"),
        ("Mode", mode),
        ("Offered rate", rates or "?"),
        ("Load", f"{profile.get('users')} Locust users; {profile.get('pacing', '')}"),
        ("Warm-up / window", f"{profile.get('warmup_s')} s, then {profile.get('duration_s')} s"),
        ("Repeats", f"{profile.get('repeat')}{shuffled}"),
        ("Machine", f"{machine.get('cpu_model')}, {machine.get('cores')} cores"),
        ("Pinning", cores),
        ("Python", str(versions.get("python", "?"))),
        ("Stores", ", ".join(f"{k}: {v}" for k, v in stores.items()) or "none started"),
        ("Packages", ", ".join(f"{k} {v}" for k, v in packages.items())),
        ("Git commit", commit),
        ("Dependency hash", str(manifest.get("dependency_hash", "?"))),
    ]
