"""Repeats folded per cell, the run's facts, and configuration options with defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import aggregate
from analysis.load import load_hot_path_bytes, load_manifest, load_summary
from analysis.options import DEFAULTS, config_options, describe, human_seconds
from loadtests.config import load as load_bench
from servers.settings import build_parser
from tests.analysis.conftest import BEHIND, GENERATOR_BOUND, UNVERIFIED


def test_by_cell_folds_repeats_into_median_and_range(latency_run: Path) -> None:
    summary = load_summary(latency_run)
    cells = aggregate.by_cell(summary, load_hot_path_bytes(latency_run))
    assert UNVERIFIED not in set(cells["config"])
    row = cells.query("config == 'session-redis' and scenario == 'browse'").iloc[0]
    per_repeat = summary.query("config == 'session-redis' and scenario == 'browse'")["p99_ms"]
    assert row["repeats"] == 2
    assert row["p99_ms"] == pytest.approx(per_repeat.median())
    assert (row["p99_ms_min"], row["p99_ms_max"]) == (per_repeat.min(), per_repeat.max())
    assert row["cpu_us_per_req"] == pytest.approx(
        row["cpu_us_per_req_server"] + row["cpu_us_per_req_store"]
    )
    assert row["me_head_bytes"] == 188
    jwt = cells.query("config == 'jwt-hs256' and scenario == 'browse'").iloc[0]
    assert jwt["cpu_us_per_req"] == pytest.approx(jwt["cpu_us_per_req_server"])  # no store: 0
    flags = cells.set_index(["config", "scenario"])
    assert flags.loc[(GENERATOR_BOUND, "browse"), "generator_bound"]
    assert not flags.loc[(BEHIND, "browse"), "kept_up"]
    assert flags.loc[("session-redis", "browse"), "kept_up"]


def test_not_measured_and_primary_scenario(latency_run: Path) -> None:
    summary = load_summary(latency_run)
    missing = aggregate.not_measured(summary)
    assert set(missing["config"]) == {UNVERIFIED}
    assert aggregate.primary_scenario(summary) == "browse"
    assert aggregate.scenarios(summary) == ["browse", "login"]


def test_method_facts_name_the_method(latency_run: Path) -> None:
    facts = dict(aggregate.method_facts(load_manifest(latency_run)))
    assert facts["Offered rate"] == "browse: 200 req/s, login: 200 req/s"
    assert facts["Complete"] == "yes"
    assert "Python" in facts and "Packages" in facts and "Machine" in facts


def test_defaults_match_the_server() -> None:
    parsed = vars(build_parser().parse_args(["--backend", "jwt"]))
    for flag, value in DEFAULTS.items():
        assert parsed[flag.replace("-", "_")] == value, flag


@pytest.mark.parametrize("name", sorted(load_bench().configs))
def test_every_configuration_of_the_bench_file_has_options(name: str) -> None:
    config = load_bench().configs[name]
    options = config_options(name, config.as_dict())
    assert options["backend"] == config.backend
    assert options["store"] in {"file", "postgres", "redis", "memcached", "none"}
    assert describe(options)


def test_options_fill_in_defaults() -> None:
    o = config_options("x", {"backend": "jwt-denylist", "server": {"alg": "ES256"}})
    assert (o["refresh_store"], o["denylist_store"], o["transport"]) == ("redis", "redis", "bearer")
    assert o["store"] == "redis" and o["access_ttl_s"] == 900.0
    assert describe(o) == "JWT ES256, denylist in Redis, Bearer header, refresh families in Redis"
    assert human_seconds(900.0) == "15 min" and human_seconds(7 * 86400.0) == "7 d"
