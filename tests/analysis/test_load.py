"""Loaders: typed frames from a run folder, the measurement window, clear errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis.load import (
    REQUEST_DTYPES,
    STEP_RAMP_SECONDS,
    MissingData,
    NotARun,
    UnknownCell,
    load_all_steps,
    load_hot_path_bytes,
    load_manifest,
    load_requests,
    load_resources,
    load_run,
    load_steps,
    load_summary,
    load_verify,
    load_window_latencies,
)
from tests.analysis.conftest import CONFIGS, UNVERIFIED
from tests.analysis.runs import make_run, record_columns


def test_manifest_and_summary_are_typed_and_carry_options(latency_run: Path) -> None:
    manifest = load_manifest(latency_run)
    assert list(manifest["configurations"]) == CONFIGS
    summary = load_summary(latency_run)
    assert len(summary) == len(CONFIGS) * 2 * 2
    assert summary["p99_ms"].dtype == float
    assert summary["generator_bound"].dtype == bool
    assert list(dict.fromkeys(summary["config"])) == CONFIGS  # manifest order kept
    row = summary[summary["config"] == "jwt-size-es256-16"].iloc[0]
    assert (row["alg"], row["extra_claims"], row["sweep"]) == ("ES256", 16, "jwt-size")
    assert (row["transport"], row["refresh_store"], row["store"]) == ("bearer", "none", "none")
    jwt = summary[summary["config"] == "jwt-hs256"].iloc[0]
    assert (jwt["refresh_store"], jwt["access_ttl_s"]) == ("redis", 900.0)
    session = summary[summary["config"] == "session-redis"].iloc[0]
    assert (session["family"], session["store"]) == ("session", "redis")
    assert pd.isna(session["alg"])
    assert load_run(latency_run).equals(summary)


def test_unverified_rows_have_no_numbers(latency_run: Path) -> None:
    rows = load_summary(latency_run).query("config == @UNVERIFIED")
    assert set(rows["status"]) == {"unverified"}
    assert rows["p50_ms"].isna().all()


@pytest.mark.parametrize("window", [False, True])
def test_requests_are_typed(latency_run: Path, window: bool) -> None:
    df = load_requests(latency_run, "session-redis", "browse", 1, window=window)
    assert list(df.columns) == list(record_columns())
    assert df["ok"].dtype == bool
    assert df["latency_ms"].dtype == float
    assert df.loc[df["name"] == "/login", "st_auth"].isna().all()
    everything = load_requests(latency_run, "session-redis", "browse", 1)
    assert (len(df) < len(everything)) is window


def _exact(run: Path, config: str, scenario: str, repeat: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (run / config / scenario / f"r{repeat}" / "summary.json").read_text()
    )
    return data


@pytest.mark.parametrize(
    ("run_name", "config", "scenario"),
    [
        ("latency_run", "session-redis", "browse"),
        ("latency_run", "jwt-hs256", "login"),
        ("max_run", "session-file", "browse"),
    ],
)
def test_percentiles_from_records_agree_with_the_summary(
    request: pytest.FixtureRequest, run_name: str, config: str, scenario: str
) -> None:
    run: Path = request.getfixturevalue(run_name)
    latencies = load_requests(run, config, scenario, 1, window=True)["latency_ms"].to_numpy()
    exact = _exact(run, config, scenario, 1)
    row = load_summary(run).query("config == @config and scenario == @scenario").iloc[0]
    assert len(latencies) == exact["requests"] == row["requests"]
    for q, column in ((50, "p50_ms"), (95, "p95_ms"), (99, "p99_ms"), (99.9, "p99_9_ms")):
        ours = float(np.percentile(latencies, q))
        assert ours == pytest.approx(exact[column], rel=1e-12)  # summary.json: exact floats
        assert ours == pytest.approx(row[column], abs=0.006)  # summary.csv: 2 decimals


def test_window_of_older_runs_is_rebuilt_from_the_manifest(tmp_path: Path) -> None:
    run = make_run(tmp_path, ["session-redis"], record_window=False)
    latencies = load_requests(run, "session-redis", "browse", 1, window=True)["latency_ms"]
    exact = _exact(run, "session-redis", "browse", 1)
    assert "window_start" not in exact
    assert float(np.percentile(latencies, 99)) == pytest.approx(exact["p99_ms"], rel=1e-12)


def test_resources_steps_and_verify(latency_run: Path, max_run: Path) -> None:
    res = load_resources(latency_run, "session-redis", "browse", 2)
    assert {"server", "locust", "store:redis"} <= set(res["group"])
    assert res["cpu_seconds"].is_monotonic_increasing or len(res) > 0
    steps = load_steps(max_run, "jwt-hs256", "browse", 1)
    assert list(steps["users"]) == [1, 4, 16, 64]
    assert steps["achieved_rps"].is_monotonic_increasing
    everything = load_all_steps(max_run)
    assert set(everything["config"]) == {"session-file", "jwt-hs256"}
    assert load_all_steps(latency_run).empty
    assert load_verify(latency_run, "session-redis", "browse", 1)[0]["outcome"] == "passed"
    with pytest.raises(MissingData, match="not a max run"):
        load_steps(latency_run, "session-redis", "browse", 1)


def test_window_latencies_and_hot_path_bytes(latency_run: Path) -> None:
    lat = load_window_latencies(latency_run)
    assert UNVERIFIED not in set(lat["config"])
    assert {"latency_ms", "config", "scenario", "repeat", "backend", "sweep"} <= set(lat.columns)
    hot = load_hot_path_bytes(latency_run)
    row = hot.query("config == 'session-redis' and scenario == 'login' and repeat == 1").iloc[0]
    # /me heads only: the login scenario's smaller /login and /logout heads do not dilute it.
    assert row["me_head_bytes"] == 134 + 54
    assert row["me_credential_bytes"] == 54


def test_not_a_run_is_one_clear_line(tmp_path: Path) -> None:
    for folder, message in (
        (tmp_path / "missing", "no such folder"),
        (tmp_path, "not an authbench run (no manifest.json)"),
    ):
        with pytest.raises(NotARun, match=re.escape(message)) as caught:
            load_summary(folder)
        assert "\n" not in str(caught.value)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(NotARun, match=r"unreadable manifest\.json"):
        load_manifest(tmp_path)


def test_summary_missing_is_not_a_run(latency_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(latency_run / "manifest.json", copy / "manifest.json")
    with pytest.raises(NotARun, match=r"no summary\.csv"):
        load_summary(copy)


def test_unknown_cells_name_what_exists(latency_run: Path) -> None:
    with pytest.raises(UnknownCell, match=r"unknown configuration 'nope'.*session-redis"):
        load_requests(latency_run, "nope", "browse")
    with pytest.raises(UnknownCell, match="unknown scenario 'refresh'"):
        load_requests(latency_run, "session-redis", "refresh")
    with pytest.raises(UnknownCell, match="no measurement session-redis/browse/r9"):
        load_requests(latency_run, "session-redis", "browse", 9)


def test_record_columns_match_the_locustfile() -> None:
    assert tuple(REQUEST_DTYPES) == record_columns()


def test_step_ramp_matches_the_runner() -> None:
    try:
        from loadtests.measure import STEP_RAMP_SECONDS as runner_ramp
    except ImportError:  # older layout
        from loadtests.runner import STEP_RAMP_SECONDS as runner_ramp  # type: ignore[attr-defined,no-redef]
    assert runner_ramp == STEP_RAMP_SECONDS


def test_empty_summary_loads(tmp_path: Path, latency_run: Path) -> None:
    shutil.copy(latency_run / "manifest.json", tmp_path / "manifest.json")
    (tmp_path / "summary.csv").write_text("config,scenario,repeat,status\n")
    assert isinstance(load_summary(tmp_path), pd.DataFrame)
    assert load_summary(tmp_path).empty
