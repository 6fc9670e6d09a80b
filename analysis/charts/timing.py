"""Time spent inside the auth step, as the server itself reports it (Server-Timing)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.patches import Patch

from analysis.charts.figure import (
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
    "Bar length is the mean time the server spent authenticating one GET /me "
    "(its own Server-Timing `auth` value): verifying a token or looking up a session.",
    "The light part is the store round trip inside it (`store`), the solid rest local work "
    "such as signature checks; both are wall-clock time, so a busy event loop stretches them.",
)


@styled
def auth_step(cells: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Draw mean Server-Timing auth and store time per configuration as auth-step.*.

    Uses `auth_ms` / `store_ms` of `analysis.aggregate.by_cell` (means over /me requests,
    medians over repeats). Returns the written paths, or [] when no row has auth timings.
    """
    cells = cells[cells["auth_ms"].notna()] if "auth_ms" in cells else cells.iloc[0:0]
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
            if pd.isna(row.get("auth_ms")):
                continue
            c = colour(str(row["backend"]))
            hatch = GENERATOR_HATCH if bool(row["generator_bound"]) else None
            auth_us = 1000 * float(row["auth_ms"])
            store_us = 1000 * float(row["store_ms"]) if pd.notna(row["store_ms"]) else 0.0
            store_part = min(store_us, auth_us)
            ax.barh(y, store_part, color=tint(c), hatch=hatch, edgecolor="white", height=0.7)
            ax.barh(
                y,
                auth_us - store_part,
                left=store_part,
                color=c,
                hatch=hatch,
                edgecolor="white",
                height=0.7,
            )
            label = f"{auth_us:,.0f} µs" + (f" (store {store_us:,.0f})" if store_us else "")
            bar_note(ax, label, auth_us, y)
            top = max(top, auth_us)
        ax.set_xlim(0, top * 1.5 if top else 1)
        ax.xaxis.set_major_formatter(THOUSANDS)
        ax.set_xlabel("mean time in the auth step per GET /me (µs)")
        ax.set_title(scenario_title(scenario, cells))
    label_configs(axes[0], cells, configs)
    axes[0].invert_yaxis()
    handles = [
        Patch(facecolor=tint("#666666"), label="store round trip"),
        Patch(facecolor="#666666", label="local work (token checks, parsing)"),
    ]
    if cells["generator_bound"].any():
        handles.append(generator_legend())
    fig.legend(handles=handles, loc="outside upper right", ncols=len(handles))
    fig.suptitle("Time inside the auth step (server-measured)", x=0.02, ha="left")
    footnote(
        fig,
        [
            "Server-Timing auth;dur and store;dur of GET /me in the measurement window,"
            " mean per run, median over repeats. Colour = backend."
        ],
    )
    return save(fig, out_dir, "auth-step")
