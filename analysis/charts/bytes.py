"""Bytes on the wire per request: the credential, and the whole request head around it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.patches import Patch

from analysis.charts.figure import (
    THOUSANDS,
    bar_note,
    config_labels,
    footnote,
    head_bytes_column,
    new_figure,
    row_height,
    save,
    styled,
)
from analysis.palette import colour, tint

HOW_TO_READ = (
    "The light bar is the whole HTTP request head a client sends (request line and headers); "
    "the dark part is the credential inside it: the session cookie or the JWT.",
    "Every authenticated request carries these bytes, so multiply by your request volume: "
    "100 bytes more is 100 GB more per billion requests.",
)


@styled
def bytes_per_request(cells: pd.DataFrame, scenario: str, out_dir: Path) -> list[Path]:
    """Draw credential and request-head bytes per configuration of `scenario` as bytes.*.

    Uses the means in `analysis.aggregate.by_cell`: credential and head bytes of GET /me
    (head bytes of every request when the /me means are absent). Returns the paths, or []
    if there are no rows.
    """
    head_column = head_bytes_column(cells)
    rows = cells[(cells["scenario"] == scenario) & cells[head_column].notna()]
    if rows.empty:
        return []
    fig = new_figure(row_height(len(rows), base=1.8), width=9.5)
    ax = fig.subplots()
    top = float(rows[head_column].max())
    for y, row in enumerate(rows.itertuples()):
        c = colour(str(row.backend))
        head, cred = float(getattr(row, head_column)), float(row.credential_bytes)
        ax.barh(y, head, color=tint(c, 0.6), height=0.72, edgecolor="white")
        ax.barh(y, cred if pd.notna(cred) else 0, color=c, height=0.72, edgecolor="white")
        text = f"{head:,.0f} B head"
        if pd.notna(cred):
            text += f" · {cred:,.0f} B credential"
        bar_note(ax, text, head, y)
    ax.set_yticks(range(len(rows)), config_labels(rows))
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.55)
    ax.xaxis.set_major_formatter(THOUSANDS)
    ax.set_xlabel("bytes per request (mean)")
    ax.set_title(f"{scenario} scenario", loc="left", fontweight="normal", fontsize=9)
    handles = [
        Patch(facecolor="#666666", label="credential (cookie or Authorization value)"),
        Patch(facecolor=tint("#666666", 0.6), label="rest of the request head"),
    ]
    fig.legend(handles=handles, loc="outside upper right", ncols=2)
    fig.suptitle("Bytes per request: credential and request head", x=0.02, ha="left")
    what = "GET /me requests" if head_column == "me_head_bytes" else "all requests"
    footnote(
        fig,
        [
            f"Means over the {what} of the measurement window, as sent by the load "
            "generator; bodies excluded. Colour = backend."
        ],
    )
    return save(fig, out_dir, "bytes-per-request")
