"""CPU cost per request, server and store apart, and the capacity it implies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.patches import Patch

from analysis.charts.figure import (
    KEPT_UP_NOTE,
    THOUSANDS,
    bar_note,
    footnote,
    label_configs,
    new_figure,
    row_height,
    save,
    scenario_title,
    styled,
)
from analysis.palette import GENERATOR_HATCH, colour, generator_legend, tint

HOW_TO_READ = (
    "Bar length is the CPU time one request costs: solid = the auth server process, "
    "light = the store it talks to (Redis, PostgreSQL, memcached).",
    "The number beside each bar is what one fully busy core could serve at that cost "
    "(1,000,000 µs ÷ total µs) — a capacity estimate that does not depend on the load generator.",
)


def per_core_rps(total_us: float) -> float:
    """Return the requests/s one core could serve at `total_us` CPU µs per request."""
    return 1e6 / total_us if total_us > 0 else float("nan")


@styled
def cpu_per_request(cells: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Draw CPU µs per request stacked server + store per configuration as cpu-per-request.*.

    One panel per scenario; each bar is annotated with the implied requests/s per core.
    A store whose CPU was not measured (external store) is drawn as 0 and says "store n/a".
    Returns the written paths, or [] when `cells` is empty.
    """
    if cells.empty:
        return []
    scenarios = list(dict.fromkeys(cells["scenario"]))
    configs = list(dict.fromkeys(cells["config"]))
    fig = new_figure(row_height(len(configs), base=2.0))
    axes = fig.subplots(1, len(scenarios), sharey=True, squeeze=False)[0]
    for ax, scenario in zip(axes, scenarios, strict=True):
        rows = cells[cells["scenario"] == scenario].set_index("config").reindex(configs)
        top = 0.0
        for y, (_config, row) in enumerate(rows.iterrows()):
            if pd.isna(row.get("cpu_us_per_req_server")):
                continue
            c = colour(str(row["backend"]))
            hatch = GENERATOR_HATCH if bool(row["generator_bound"]) else None
            server = float(row["cpu_us_per_req_server"])
            store_known = pd.notna(row["cpu_us_per_req_store"])
            store = float(row["cpu_us_per_req_store"]) if store_known else 0.0
            ax.barh(y, server, color=c, hatch=hatch, edgecolor="white", height=0.7)
            ax.barh(
                y, store, left=server, color=tint(c), hatch=hatch, edgecolor="white", height=0.7
            )
            total = server + store
            text = f"{per_core_rps(total):,.0f} req/s/core"
            if not store_known:
                text += " (store n/a)"
            bar_note(ax, text, total, y)
            top = max(top, total)
        ax.set_xlim(0, top * 1.45 if top else 1)
        ax.xaxis.set_major_formatter(THOUSANDS)
        ax.set_xlabel("CPU time per request (µs)")
        ax.set_title(scenario_title(scenario, cells))
    label_configs(axes[0], cells, configs)
    axes[0].invert_yaxis()
    handles = [
        Patch(facecolor="#666666", label="auth server"),
        Patch(facecolor=tint("#666666"), label="store process(es)"),
    ]
    if cells["generator_bound"].any():
        handles.append(generator_legend())
    fig.legend(handles=handles, loc="outside upper right", ncols=len(handles))
    fig.suptitle("CPU cost per request: server vs store", x=0.02, ha="left")
    notes = [
        "CPU seconds of each process group over the measurement window ÷ requests served;"
        " medians over repeats. Colour = backend."
    ]
    if not cells["kept_up"].all():
        notes.append(KEPT_UP_NOTE)
    footnote(fig, notes)
    return save(fig, out_dir, "cpu-per-request")
