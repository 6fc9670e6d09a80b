"""Every chart function writes a non-empty PNG and SVG, in the fixed backend colours."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from analysis import aggregate
from analysis.charts import bytes as bytes_charts
from analysis.charts import capacity, cost, draw_all, latency, timing, tokens
from analysis.load import (
    load_all_steps,
    load_hot_path_bytes,
    load_summary,
    load_window_latencies,
)
from analysis.palette import BACKEND_COLOURS, colour

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cells(latency_run: Path) -> pd.DataFrame:
    return aggregate.by_cell(load_summary(latency_run), load_hot_path_bytes(latency_run))


def assert_chart(paths: list[Path], name: str) -> None:
    assert [p.name for p in paths] == [f"{name}.png", f"{name}.svg"]
    png, svg = paths
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 5000
    text = svg.read_text()
    assert "<svg" in text and len(text) > 5000


def charts_of(latency_run: Path, cells: pd.DataFrame) -> dict[str, Callable[[Path], list[Path]]]:
    lat = load_window_latencies(latency_run)
    return {
        "latency-percentiles": lambda out: latency.percentiles(cells, out),
        "latency-cdf": lambda out: latency.cdf(lat, cells, out),
        "cpu-per-request": lambda out: cost.cpu_per_request(cells, out),
        "bytes-per-request": lambda out: bytes_charts.bytes_per_request(cells, "browse", out),
        "tokens-size": lambda out: tokens.token_size(cells, "browse", out),
        "tokens-cost": lambda out: tokens.token_cost(cells, "browse", out),
        "auth-step": lambda out: timing.auth_step(cells, out),
    }


@pytest.fixture(scope="module")
def drawn(
    latency_run: Path, cells: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("charts")
    return {name: draw(out) for name, draw in charts_of(latency_run, cells).items()}


def test_every_chart_writes_png_and_svg(drawn: dict[str, list[Path]]) -> None:
    for name, paths in drawn.items():
        assert_chart(paths, name)


def test_latency_against_load_from_a_max_run(max_run: Path, tmp_path: Path) -> None:
    assert_chart(capacity.latency_vs_load(load_all_steps(max_run), tmp_path), "latency-vs-load")


def test_backends_keep_their_colour_on_every_chart(drawn: dict[str, list[Path]]) -> None:
    for name in ("latency-percentiles", "latency-cdf", "cpu-per-request", "auth-step"):
        svg = drawn[name][1].read_text().lower()
        for backend in ("session-redis", "session-file", "jwt"):
            assert colour(backend).lower() in svg, (name, backend)
    assert len(set(BACKEND_COLOURS.values())) == len(BACKEND_COLOURS)


def test_generator_bound_results_are_hatched(drawn: dict[str, list[Path]]) -> None:
    # Hatches are SVG <pattern>s; only generator-bound bars (session-file here) use them.
    assert "<pattern" in drawn["cpu-per-request"][1].read_text()


def test_nothing_bound_means_no_hatch(
    latency_run: Path, cells: pd.DataFrame, tmp_path: Path
) -> None:
    unbound = cells.assign(generator_bound=False)
    assert "<pattern" not in cost.cpu_per_request(unbound, tmp_path)[1].read_text()


def test_charts_without_data_are_skipped_not_drawn(latency_run: Path, tmp_path: Path) -> None:
    assert capacity.latency_vs_load(pd.DataFrame(), tmp_path) == []
    empty = aggregate.by_cell(load_summary(latency_run).iloc[0:0])
    assert latency.percentiles(empty, tmp_path) == []
    assert cost.cpu_per_request(empty, tmp_path) == []
    assert tokens.token_size(empty, "browse", tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_draw_all_lists_every_chart_in_order(max_run: Path, tmp_path: Path) -> None:
    charts = draw_all(max_run, tmp_path)
    by_name = {c.name: c for c in charts}
    assert by_name["latency-vs-load"].png is not None
    assert "max-mode" not in by_name["latency-vs-load"].skipped
    # A max run has no equal-load latency and no token sweep: said, not drawn.
    assert by_name["latency-percentiles"].skipped and by_name["tokens-size"].skipped
    assert all(len(c.how_to_read) == 2 for c in charts)
