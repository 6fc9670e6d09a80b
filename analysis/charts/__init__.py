"""Every chart of a run, in report order: the explicit registry the report walks.

Each chart family lives in its own module and exposes functions taking DataFrames and an
output folder and returning the files written; `draw_all` feeds them one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import aggregate
from analysis.charts import bytes as bytes_charts
from analysis.charts import capacity, cost, latency, timing, tokens
from analysis.load import (
    load_all_steps,
    load_hot_path_bytes,
    load_summary,
    load_window_latencies,
)


@dataclass(frozen=True)
class Chart:
    """One chart of the report: what it is, how to read it, and its files (or why none)."""

    name: str
    title: str
    how_to_read: tuple[str, str]
    paths: list[Path] = field(default_factory=list)
    skipped: str = ""
    """Why there is no chart (no data of that kind in the run); empty when drawn."""

    @property
    def png(self) -> Path | None:
        """The PNG file, if drawn."""
        return next((p for p in self.paths if p.suffix == ".png"), None)


def draw_all(
    run: Path, out_dir: Path | None = None, *, cells: pd.DataFrame | None = None
) -> list[Chart]:
    """Draw every chart of `run` into `out_dir` (default RUN/charts) and return them in order.

    `cells` (`aggregate.by_cell` with hot-path bytes) is computed when not given.
    Charts without data in this run come back with `skipped` set instead of paths.
    Raises analysis.load.RunError if `run` is not a readable run.
    """
    out = out_dir or Path(run) / "charts"
    summary = load_summary(run)
    if cells is None:
        cells = aggregate.by_cell(summary, load_hot_path_bytes(run))
    scenario = aggregate.primary_scenario(summary) or ""
    has_latency = bool(len(cells)) and (cells["mode"] == "latency").any()
    no_equal_load = "No fixed-rate (latency mode) measurements in this run."
    charts = [
        Chart(
            "latency-percentiles",
            "Latency percentiles at equal offered load",
            latency.HOW_TO_READ_PERCENTILES,
            latency.percentiles(cells, out),
            "" if has_latency else no_equal_load,
        ),
        Chart(
            "latency-cdf",
            "Latency distribution (tail)",
            latency.HOW_TO_READ_CDF,
            latency.cdf(load_window_latencies(run), cells, out) if has_latency else [],
            "" if has_latency else no_equal_load,
        ),
        Chart(
            "cpu-per-request",
            "CPU per request and implied capacity",
            cost.HOW_TO_READ,
            cost.cpu_per_request(cells, out),
        ),
        Chart(
            "latency-vs-load",
            "Latency against load",
            capacity.HOW_TO_READ,
            capacity.latency_vs_load(load_all_steps(run), out),
        ),
        Chart(
            "bytes-per-request",
            f"Bytes per request ({scenario})",
            bytes_charts.HOW_TO_READ,
            bytes_charts.bytes_per_request(cells, scenario, out),
        ),
        Chart(
            "tokens-size",
            "Token size against claims and algorithm",
            tokens.HOW_TO_READ_SIZE,
            tokens.token_size(cells, scenario, out),
        ),
        Chart(
            "tokens-cost",
            "What token size costs",
            tokens.HOW_TO_READ_COST,
            tokens.token_cost(cells, scenario, out),
        ),
        Chart(
            "auth-step",
            "Time inside the auth step",
            timing.HOW_TO_READ,
            timing.auth_step(cells, out),
        ),
    ]
    return [_with_reason(c) for c in charts]


_NO_DATA = {
    "latency-vs-load": capacity.NO_DATA_NOTE,
    "tokens-size": "No token-size sweep (jwt-size-*) in this run; `make bench-tokens` makes one.",
    "tokens-cost": "No token-size sweep (jwt-size-*) in this run; `make bench-tokens` makes one.",
}


def _with_reason(chart: Chart) -> Chart:
    if chart.paths or chart.skipped:
        return chart
    reason = _NO_DATA.get(chart.name, "No measured configuration has data for this chart.")
    return Chart(chart.name, chart.title, chart.how_to_read, [], reason)
