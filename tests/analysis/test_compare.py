"""Comparison: planted differences are found, identical data is noise, hashes are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare import (
    METRICS,
    DependencyMismatch,
    Side,
    compare_configs,
    compare_runs,
    format_comparison,
    judge,
    offered_rate_notes,
    unmatched,
)
from analysis.load import UnknownCell
from tests.analysis.runs import Behaviour, make_run

CONFIGS = ["session-redis", "jwt-hs256"]


def slower(factor: float, cpu: float = 1.0):
    def behaviour(config: str, _scenario: str, repeat: int) -> Behaviour:
        # Repeats differ a little, as real ones do, so the spread is not zero.
        jitter = 1.0 + 0.03 * repeat
        scale = factor if config == "jwt-hs256" else 1.0
        return Behaviour(latency_ms=2.0 * scale * jitter, server_us=300.0 * jitter * cpu)

    return behaviour


def labels(table: pd.DataFrame, config: str) -> dict[str, str]:
    rows = table[table["config"] == config]
    return dict(zip(rows["metric"], rows["label"], strict=True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    return {
        "base": make_run(root, CONFIGS, name="base", repeat=3, behaviour=slower(1.0)),
        "slow": make_run(root, CONFIGS, name="slow", repeat=3, behaviour=slower(2.0, cpu=2.0)),
        "base1": make_run(root, CONFIGS, name="base1", behaviour=slower(1.0)),
        "slow1": make_run(root, CONFIGS, name="slow1", behaviour=slower(2.0)),
        "other": make_run(root, CONFIGS, name="other", dependency_hash="0" * 16),
    }


def test_planted_slowdown_with_repeats_is_significant(runs: dict[str, Path]) -> None:
    table = compare_runs(runs["base"], runs["slow"])
    jwt = labels(table, "jwt-hs256")
    assert jwt["p50 ms"] == jwt["p99 ms"] == "slower"
    assert jwt["server CPU µs/req"] == "slower"
    assert set(table.loc[table["metric"] == "p50 ms", "test"]) == {"Welch t"}
    assert labels(table, "session-redis")["p50 ms"] == "noise"  # unchanged configuration
    assert labels(table, "session-redis")["achieved req/s"] == "noise"


def test_identical_runs_are_all_noise(runs: dict[str, Path]) -> None:
    table = compare_runs(runs["base"], runs["base"])
    assert set(table["label"]) == {"noise"}
    assert len(table) == len(CONFIGS) * len(METRICS)


def test_single_repeats_use_the_requests(runs: dict[str, Path]) -> None:
    table = compare_runs(runs["base1"], runs["slow1"])
    jwt = table[table["config"] == "jwt-hs256"].set_index("metric")
    assert jwt.loc["p50 ms", "test"] == "Mann-Whitney U"
    assert jwt.loc["p99 ms", "test"] == "bootstrap p99"
    assert jwt.loc["p50 ms", "label"] == jwt.loc["p99 ms", "label"] == "slower"
    assert jwt.loc["server CPU µs/req", "test"].startswith("±10% band")
    assert labels(compare_runs(runs["base1"], runs["base1"]), "jwt-hs256")["p99 ms"] == "noise"


def test_one_sided_repeats_use_the_repeat_spread(runs: dict[str, Path]) -> None:
    table = compare_runs(runs["base1"], runs["slow"])
    p50 = table[(table["config"] == "jwt-hs256") & (table["metric"] == "p50 ms")].iloc[0]
    assert p50["test"] == "t vs single run"
    assert p50["label"] == "slower"


def test_different_dependency_sets_are_refused_unless_forced(runs: dict[str, Path]) -> None:
    with pytest.raises(DependencyMismatch, match="--force") as caught:
        compare_runs(runs["base1"], runs["other"])
    assert "\n" not in str(caught.value)
    assert not compare_runs(runs["base1"], runs["other"], force=True).empty


def test_compare_configs_inside_one_run(runs: dict[str, Path]) -> None:
    table = compare_configs(runs["slow"], "session-redis", "jwt-hs256")
    assert set(table["config"]) == {"session-redis → jwt-hs256"}
    assert labels(table, "session-redis → jwt-hs256")["p50 ms"] == "slower"
    with pytest.raises(UnknownCell, match="unknown configuration 'nope'"):
        compare_configs(runs["slow"], "session-redis", "nope")


def test_formatting_and_notes(runs: dict[str, Path], tmp_path: Path) -> None:
    table = compare_runs(runs["base"], runs["slow"])
    text = format_comparison(table, "A-run", "B-run", ["a note"])
    assert "jwt-hs256 · browse" in text and "slower" in text and "note: a note" in text
    assert text.splitlines()[-1].endswith("0 n/a")
    fast = make_run(tmp_path, ["session-redis"], name="fast", rate=400.0)
    assert "offered rate of browse differs" in offered_rate_notes(runs["base1"], fast)[0]
    assert unmatched(runs["base1"], fast) == ["only in A: jwt-hs256/browse (latency)"]


def test_zero_spread_and_missing_values() -> None:
    def side(values: list[float]) -> Side:
        return Side(pd.DataFrame({"p50_ms": values, "requests": 100}), lambda: np.array([]))

    p50 = METRICS[0]
    assert judge(p50, side([2.0, 2.0]), side([2.0, 2.0]))["label"] == "noise"
    assert judge(p50, side([2.0, 2.0]), side([4.0, 4.0]))["label"] == "slower"
    assert judge(p50, side([]), side([4.0]))["label"] == "n/a"
    assert judge(p50, side([2.0]), side([4.0]))["label"] == "n/a"  # no records to test
