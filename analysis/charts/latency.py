"""Latency at equal offered load: percentiles per configuration, and the whole distribution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.typing import LineStyleType

from analysis.charts.figure import (
    KEPT_UP_NOTE,
    THOUSANDS,
    bar_note,
    footnote,
    label_configs,
    log_span_wide,
    new_figure,
    row_height,
    save,
    scenario_title,
    styled,
)
from analysis.palette import GENERATOR_NOTE, colour, style_for, tint

PERCENTILE_MARKS = (("p50_ms", "o", "p50 (median)"), ("p95_ms", "s", "p95"), ("p99_ms", "^", "p99"))
# Percentile markers sit slightly apart in each row so their whiskers never overlap.
ROW_OFFSETS = (-0.22, 0.0, 0.22)
CDF_POINTS = 400
# Many configurations make a CDF unreadable: sweep members are drawn only at this size.
CDF_SWEEP_CLAIMS = 0

HOW_TO_READ_PERCENTILES = (
    "Each row is one configuration under the same offered load; ● is the median request, "
    "■ the 95th and ▲ the 99th percentile (further right = slower).",
    "The gap between ● and ▲ is the tail: what one request in a hundred waits. "
    "Whiskers, when shown, span the fastest to slowest repeat.",
)
HOW_TO_READ_CDF = (
    "For each latency on the x-axis, the y-axis gives the share of requests that were "
    "at least that slow; both axes are logarithmic so the rare slow requests stay visible.",
    "Curves further left are faster; where a curve crosses the 1% line is its p99. "
    "A curve that drops late and steeply has a long tail.",
)


def _latency_cells(cells: pd.DataFrame) -> pd.DataFrame:
    return cells[cells["mode"] == "latency"] if "mode" in cells else cells


@styled
def percentiles(cells: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Draw p50/p95/p99 per configuration, one panel per scenario, as latency-percentiles.*.

    `cells` is `analysis.aggregate.by_cell` output; only latency-mode rows are drawn (a max
    run has no equal-load latency). Whiskers span min–max over repeats when there are
    several. Returns the written paths, or [] when there is nothing to draw.
    """
    cells = _latency_cells(cells)
    if cells.empty:
        return []
    scenarios = list(dict.fromkeys(cells["scenario"]))
    configs = list(dict.fromkeys(cells["config"]))
    fig = new_figure(row_height(len(configs), base=1.6, minimum=2.6) + 0.25 * len(configs))
    axes = fig.subplots(1, len(scenarios), sharey=True, squeeze=False)[0]
    wide = log_span_wide(pd.concat([cells["p50_ms"], cells["p99_ms"]]), factor=30)
    for ax, scenario in zip(axes, scenarios, strict=True):
        rows = cells[cells["scenario"] == scenario].set_index("config").reindex(configs)
        rightmost = _draw_percentile_rows(ax, rows)
        ax.set_title(scenario_title(scenario, cells))
        ax.set_xlabel("latency (ms)" + (", log scale" if wide else ""))
        # Leave room right of the slowest row for its "p99 … ms" label.
        if wide:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(THOUSANDS)
            low = float(cells[["p50_ms", "p50_ms_min"]].min().min())
            ax.set_xlim(low / 1.6, rightmost * 4)
        else:
            ax.set_xlim(0, rightmost * 1.3 if rightmost > 0 else 1)
    label_configs(axes[0], cells, configs)
    handles = [
        Line2D([], [], marker=m, color="#555555", linestyle="none", label=text)
        for _, m, text in PERCENTILE_MARKS
    ]
    fig.legend(handles=handles, loc="outside upper right", ncols=3)
    fig.suptitle("Request latency per configuration at the same offered load", x=0.02, ha="left")
    notes = []
    if int(cells["repeats"].max()) > 1:
        notes.append(
            f"Markers: median over {int(cells['repeats'].max())} repeats; "
            "whiskers: fastest to slowest repeat."
        )
    if cells["generator_bound"].any():
        notes.append(GENERATOR_NOTE + " (hollow markers).")
    if not cells["kept_up"].all():
        notes.append(KEPT_UP_NOTE)
    footnote(fig, notes)
    return save(fig, out_dir, "latency-percentiles")


def _draw_percentile_rows(ax: Axes, rows: pd.DataFrame) -> float:
    """Draw one panel's rows; return the rightmost drawn value (for room for the labels)."""
    rightmost = 0.0
    for y, (_config, row) in enumerate(rows.iterrows()):
        if pd.isna(row.get("p50_ms")):
            ax.text(
                0.01,
                y,
                "not measured",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize=8,
                color="#888888",
            )
            continue
        c = colour(str(row["backend"]))
        hollow = bool(row["generator_bound"])
        spread = row["repeats"] > 1
        if not spread:
            ax.plot([row["p50_ms"], row["p99_ms"]], [y, y], color=tint(c, 0.45), lw=2, zorder=1)
        right = float(row["p99_ms"])
        for (column, marker, _), offset in zip(PERCENTILE_MARKS, ROW_OFFSETS, strict=True):
            value = float(row[column])
            dy = offset if spread else 0.0
            if spread:
                lo, hi = float(row[f"{column}_min"]), float(row[f"{column}_max"])
                ax.errorbar(
                    value,
                    y + dy,
                    xerr=[[value - lo], [hi - value]],
                    fmt="none",
                    ecolor=c,
                    elinewidth=1.0,
                    capsize=2.5,
                    zorder=2,
                )
                right = max(right, hi)
            ax.plot(
                value,
                y + dy,
                marker=marker,
                markersize=6.5,
                color=c,
                zorder=3,
                markerfacecolor="white" if hollow else c,
                markeredgewidth=1.4,
                linestyle="none",
            )
        rightmost = max(rightmost, right)
        bar_note(ax, f"p99 {row['p99_ms']:.3g} ms", right, y, gap=6)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    return rightmost


def cdf_selection(latencies: pd.DataFrame) -> pd.DataFrame:
    """Return the rows of `latencies` the CDF draws: every configuration except sweep
    members beyond the baseline size (the token-size charts cover those)."""
    if "sweep" not in latencies or "extra_claims" not in latencies:
        return latencies
    keep = latencies["sweep"].isna() | (latencies["extra_claims"] == CDF_SWEEP_CLAIMS)
    return latencies[keep]


def exceedance(latency_ms: np.ndarray, points: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Return (latency, share of requests at least that slow) at log-spaced shares.

    Shares run from 1 down to 1/n, so the tail keeps its resolution however many requests
    there are. Empty input gives two empty arrays.
    """
    values = np.sort(np.asarray(latency_ms, dtype=float))
    n = len(values)
    if n == 0:
        return values, values
    share = np.unique(np.geomspace(1.0, 1.0 / n, num=min(points, n)))[::-1]
    return np.quantile(values, 1.0 - share), share


@styled
def cdf(latencies: pd.DataFrame, cells: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Draw the latency distribution's tail (1 − CDF, log–log) per configuration as latency-cdf.*.

    `latencies` holds the measurement window's requests (columns config, scenario, backend,
    latency_ms; repeats pooled) of latency-mode cells. Returns the paths, or [] if empty.
    """
    latencies = cdf_selection(latencies)
    if latencies.empty:
        return []
    scenarios = list(dict.fromkeys(latencies["scenario"]))
    fig = new_figure(4.8 if len(scenarios) < 3 else 7.5)
    ncols = min(2, len(scenarios))
    nrows = -(-len(scenarios) // ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    per_backend: dict[str, int] = {}
    styles: dict[str, tuple[LineStyleType, str]] = {}
    for config, backend in (
        latencies[["config", "backend"]].drop_duplicates().itertuples(index=False)
    ):
        styles[config] = style_for(per_backend.get(backend, 0))
        per_backend[backend] = per_backend.get(backend, 0) + 1
    for ax, scenario in zip(axes, scenarios, strict=False):
        for (config, backend), rows in latencies[latencies["scenario"] == scenario].groupby(
            ["config", "backend"], sort=False
        ):
            x, y = exceedance(rows["latency_ms"].to_numpy())
            ax.plot(
                x,
                y,
                color=colour(str(backend)),
                linestyle=styles[str(config)][0],
                lw=1.6,
                label=str(config),
            )
        for share, text in ((0.5, "p50"), (0.01, "p99"), (0.001, "p99.9")):
            ax.axhline(share, color="#999999", lw=0.7, ls=":")
            ax.text(
                1.0,
                share,
                f" {text}",
                transform=ax.get_yaxis_transform(),
                va="center",
                fontsize=7.5,
                color="#777777",
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(THOUSANDS)
        ax.set_yscale("log")
        ax.set_ylim(top=1.05)
        ax.yaxis.set_major_formatter(lambda v, _p: f"{100 * v:g}%")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_title(scenario_title(scenario, cells))
    for ax in axes[len(scenarios) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("requests at least this slow (log scale)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", title="configuration")
    fig.suptitle(
        "Latency distribution: how many requests were at least this slow", x=0.02, ha="left"
    )
    notes = ["Measurement window only; repeats pooled."]
    if latencies.get("sweep") is not None and latencies["sweep"].notna().any():
        notes.append("Token-size sweep members appear at their smallest token only.")
    footnote(fig, notes)
    return save(fig, out_dir, "latency-cdf")
