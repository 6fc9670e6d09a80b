"""Shared figure plumbing: a headless Figure, one house style, PNG + SVG output.

Figures are made with `matplotlib.figure.Figure` directly (no pyplot): no global state, no
display, the Agg renderer for PNG and the SVG renderer for SVG.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.palette import label as config_label

STYLE: dict[Any, Any] = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "svg.fonttype": "path",
    "svg.hashsalt": "authbench",
}
P = ParamSpec("P")
R = TypeVar("R")
PNG_DPI = 120
ROW_INCHES = 0.32
FIGURE_WIDTH = 11.0


def styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Run a chart function inside the house style (rc settings apply as artists are made)."""

    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def new_figure(height: float = 4.5, width: float = FIGURE_WIDTH) -> Figure:
    """Return an empty, constrained-layout Figure (call inside a `styled` function)."""
    return Figure(figsize=(width, height), layout="constrained")


def row_height(n_rows: int, *, base: float = 1.6, minimum: float = 3.2) -> float:
    """Return a figure height (inches) that gives each of `n_rows` bars room for its label."""
    return max(minimum, base + ROW_INCHES * n_rows)


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write `fig` as `<name>.png` and `<name>.svg` into `out_dir`; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.savefig(paths[0], dpi=PNG_DPI, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    return paths


def footnote(fig: Figure, lines: Sequence[str]) -> None:
    """Put small grey explanatory lines under the panels (method, units, marks)."""
    if lines:
        fig.supxlabel("\n".join(lines), fontsize=8, color="#555555", ha="center")


def config_labels(cells: pd.DataFrame) -> list[str]:
    """Return the y-axis labels of `cells` rows, marked where generator-bound or behind."""
    out = []
    for row in cells.itertuples():
        text = config_label(str(row.config), bool(row.generator_bound))
        if not bool(getattr(row, "kept_up", True)):
            text += " ‡"
        out.append(text)
    return out


def label_configs(ax: Axes, cells: pd.DataFrame, configs: Sequence[str]) -> None:
    """Put one marked label per configuration on `ax`'s y axis, in the order of `configs`."""
    labelled = cells.drop_duplicates("config").set_index("config").reindex(configs)
    labelled = labelled.reset_index().fillna({"kept_up": True})
    ax.set_yticks(range(len(configs)), config_labels(labelled))


def bar_note(ax: Axes, text: str, x: float, y: float, gap: float = 4) -> None:
    """Write `text` just right of the point (x, y): the value at the end of a bar."""
    ax.annotate(
        text,
        (x, y),
        xytext=(gap, 0),
        textcoords="offset points",
        va="center",
        fontsize=7.5,
        color="#333333",
    )


KEPT_UP_NOTE = (
    "‡ achieved under 85% of the offered rate: requests queued, so latency includes waiting"
)


def thousands(value: float, _pos: object = None) -> str:
    """Format a tick as 1,234 (or 0.5 below 10)."""
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:g}"


THOUSANDS = FuncFormatter(thousands)


def log_span_wide(values: pd.Series, factor: float = 15.0) -> bool:
    """Return whether positive `values` span more than `factor` × (log scale reads better)."""
    v = values[values > 0].dropna()
    return bool(len(v)) and float(v.max()) / float(v.min()) > factor


def scenario_title(scenario: str, cells: pd.DataFrame) -> str:
    """Return a panel title naming the scenario and the load it ran at."""
    rows = cells[cells["scenario"] == scenario]
    if rows.empty:
        return scenario
    if (rows["mode"] == "max").all():
        return f"{scenario} — at capacity (max mode)"
    offered = rows["offered_rps"].dropna()
    rate = f"{offered.iloc[0]:,.0f} req/s offered" if len(offered) else "offered rate unknown"
    return f"{scenario} — {rate}"


def head_bytes_column(cells: pd.DataFrame) -> str:
    """Return the request-head column to draw: GET /me heads when measured, else all requests."""
    if "me_head_bytes" in cells and cells["me_head_bytes"].notna().any():
        return "me_head_bytes"
    return "request_head_bytes"
