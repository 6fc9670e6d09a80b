"""The token-size sweep: JWT length, request bytes, traffic, CPU and p99 against claims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from analysis.charts.figure import (
    THOUSANDS,
    footnote,
    head_bytes_column,
    new_figure,
    save,
    styled,
)
from analysis.palette import GENERATOR_NOTE, colour, style_for

SWEEP = "jwt-size"
ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
BILLION = 1e9

HOW_TO_READ_SIZE = (
    "Each line is one signing algorithm; moving right adds claims to the token payload. "
    "The dashed line is the session-id cookie, which stays the same size whatever the user holds.",
    "The right panel turns the difference into traffic: extra gigabytes the clients send "
    "for every billion authenticated requests compared with a session cookie.",
)
HOW_TO_READ_COST = (
    "The x-axis is the size of the token actually sent (log scale); each point is one "
    "claim count. Left: server CPU per request; right: the 99th-percentile latency.",
    "Bigger tokens cost more to parse and verify; the dashed line is the session "
    "configuration measured in the same run, for scale.",
)


def sweep_cells(cells: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """Return the jwt-size sweep rows of `scenario`, ordered by algorithm then claims."""
    if "sweep" not in cells:
        return cells.iloc[0:0]
    rows = cells[(cells["sweep"] == SWEEP) & (cells["scenario"] == scenario)].copy()
    rows["_alg"] = rows["alg"].map({a: i for i, a in enumerate(ALGORITHMS)}).fillna(99)
    return rows.sort_values(["_alg", "extra_claims"]).drop(columns="_alg")


def session_baseline(cells: pd.DataFrame, scenario: str) -> pd.Series | None:
    """Return the first session configuration's row of `scenario` (the flat baseline)."""
    rows = cells[(cells["family"] == "session") & (cells["scenario"] == scenario)]
    return rows.iloc[0] if len(rows) else None


def _per_alg(ax: Axes, rows: pd.DataFrame, x: str, y: str) -> None:
    for i, (alg, group) in enumerate(rows.groupby("alg", sort=False)):
        linestyle, marker = style_for(i)
        ax.plot(
            group[x],
            group[y],
            color=colour("jwt"),
            linestyle=linestyle,
            marker=marker,
            lw=1.6,
            label=str(alg),
        )
        bound = group[group["generator_bound"]]
        ax.plot(
            bound[x],
            bound[y],
            linestyle="none",
            marker="o",
            markersize=12,
            markerfacecolor="none",
            markeredgecolor="#333333",
        )


def _baseline(ax: Axes, value: float, text: str, backend: str) -> None:
    ax.axhline(value, color=colour(backend), linestyle="--", lw=1.4)
    ax.annotate(
        text,
        (0.99, value),
        xycoords=("axes fraction", "data"),
        xytext=(0, 4),
        textcoords="offset points",
        fontsize=7.5,
        color=colour(backend),
        ha="right",
    )


def _claims_axis(ax: Axes, claims: list[int]) -> None:
    ax.set_xticks(range(len(claims)), [str(c) for c in claims])
    ax.set_xlim(-0.4, len(claims) - 0.6)
    ax.set_xlabel("extra claims in the token payload")


def _log_bytes(ax: Axes) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(THOUSANDS)


@styled
def token_size(cells: pd.DataFrame, scenario: str, out_dir: Path) -> list[Path]:
    """Draw JWT length, request bytes and projected traffic against extra claims per algorithm.

    `cells` is `by_cell` output; uses the jwt-size-* sweep rows of `scenario` and the first
    session configuration as the flat baseline. Writes tokens-size.*; returns the paths, or
    [] when the run has no sweep.
    """
    rows = sweep_cells(cells, scenario)
    if rows.empty:
        return []
    head = head_bytes_column(cells)
    base = session_baseline(cells, scenario)
    claims = sorted(int(c) for c in rows["extra_claims"].dropna().unique())
    rows = rows.assign(position=rows["extra_claims"].map({c: i for i, c in enumerate(claims)}))
    fig = new_figure(4.6)
    ax_cred, ax_head, ax_gb = fig.subplots(1, 3)
    _per_alg(ax_cred, rows, "position", "credential_bytes")
    _per_alg(ax_head, rows, "position", head)
    ax_cred.set_ylabel("bytes (log scale)")
    ax_cred.set_title("JWT sent per request")
    ax_head.set_ylabel("bytes per request (log scale)")
    ax_head.set_title("whole request head")
    if base is not None:
        backend = str(base["backend"])
        cookie = f"{base['config']} cookie: {base['credential_bytes']:,.0f} B"
        _baseline(ax_cred, float(base["credential_bytes"]), cookie, backend)
        _baseline(ax_head, float(base[head]), f"{base['config']}: {base[head]:,.0f} B", backend)
        extra = rows.assign(gb=(rows[head] - float(base[head])) * BILLION / 1e9)
        ax_gb.set_title("extra request traffic")
        gb_label = f"GB more than {base['config']} per 10⁹ requests (log)"
    else:
        extra = rows.assign(gb=rows[head] * BILLION / 1e9)
        ax_gb.set_title("request traffic")
        gb_label = "GB per 10⁹ requests (log scale)"
    _per_alg(ax_gb, extra, "position", "gb")
    for position, ha, dx in ((0, "left", 8), (len(claims) - 1, "right", -8)):
        at = extra[extra["position"] == position]["gb"]
        if len(at):
            text = _range_text(float(at.min()), float(at.max()), " GB")
            ax_gb.annotate(
                text,
                (position, float(at.max())),
                xytext=(dx, 6),
                textcoords="offset points",
                ha=ha,
                fontsize=7.5,
            )
    ax_gb.set_ylabel(gb_label)
    for ax in (ax_cred, ax_head, ax_gb):
        _claims_axis(ax, claims)
        _log_bytes(ax)
    ax_cred.legend(title="algorithm", loc="upper left")
    fig.suptitle("Token size: JWT bytes against payload claims and algorithm", x=0.02, ha="left")
    what = "GET /me" if head == "me_head_bytes" else "all requests"
    notes = [
        f"Means over {what} in the measurement window; stateless JWT (no refresh store). "
        "Traffic = bytes per request × 10⁹ requests."
    ]
    notes += _overlap_notes(rows, "credential_bytes")
    if rows["generator_bound"].any():
        notes.append("○ circled points: " + GENERATOR_NOTE)
    footnote(fig, notes)
    return save(fig, out_dir, "tokens-size")


def _range_text(low: float, high: float, unit: str) -> str:
    if high - low < 0.02 * max(abs(high), 1.0):
        return f"{high:,.0f}{unit}"
    return f"{low:,.0f}–{high:,.0f}{unit}"


def _overlap_notes(rows: pd.DataFrame, column: str) -> list[str]:
    """Return a note for algorithms whose lines coincide (e.g. ES256 and EdDSA: both sign
    with 64 bytes), so a reader does not look for a missing line."""
    series = {
        alg: g.set_index("extra_claims")[column] for alg, g in rows.groupby("alg", sort=False)
    }
    names = list(series)
    pairs = [
        f"{a} and {b}"
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if ((series[a] - series[b]).abs() <= 0.01 * series[a]).all()
    ]
    return [f"{p} tokens are the same size: their lines overlap." for p in pairs]


@styled
def token_cost(cells: pd.DataFrame, scenario: str, out_dir: Path) -> list[Path]:
    """Draw server CPU µs/request and p99 latency against token size per algorithm.

    Writes tokens-cost.*; returns the paths, or [] when the run has no jwt-size sweep.
    """
    rows = sweep_cells(cells, scenario)
    rows = rows[rows["credential_bytes"] > 0]
    if rows.empty:
        return []
    base = session_baseline(cells, scenario)
    fig = new_figure(4.4)
    ax_cpu, ax_p99 = fig.subplots(1, 2)
    _per_alg(ax_cpu, rows, "credential_bytes", "cpu_us_per_req_server")
    _per_alg(ax_p99, rows, "credential_bytes", "p99_ms")
    behind = rows[~rows["kept_up"].astype(bool)]
    ax_p99.plot(
        behind["credential_bytes"],
        behind["p99_ms"],
        linestyle="none",
        marker="s",
        markersize=13,
        markerfacecolor="none",
        markeredgecolor="#999999",
    )
    ax_cpu.set_ylabel("server CPU per request (µs)")
    ax_cpu.set_title("CPU cost")
    ax_p99.set_ylabel("p99 latency (ms)")
    ax_p99.set_title(f"tail latency at {rows['offered_rps'].iloc[0]:,.0f} req/s offered")
    if base is not None:
        backend = str(base["backend"])
        _baseline(ax_cpu, float(base["cpu_us_per_req_server"]), str(base["config"]), backend)
        _baseline(ax_p99, float(base["p99_ms"]), str(base["config"]), backend)
    low, high = float(rows["credential_bytes"].min()), float(rows["credential_bytes"].max())
    for ax in (ax_cpu, ax_p99):
        ax.set_xscale("log")
        ax.set_xlim(low / 1.3, high * 1.6)
        ax.xaxis.set_major_formatter(THOUSANDS)
        ax.set_xlabel("token size sent (bytes, log scale)")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(THOUSANDS)
    ax_cpu.legend(title="algorithm", loc="upper left")
    fig.suptitle("Token size: what a bigger JWT costs the server", x=0.02, ha="left")
    notes = [
        "Medians over repeats; each point is one claim count "
        f"({', '.join(str(int(c)) for c in np.unique(rows['extra_claims']))})."
    ]
    if len(behind):
        notes.append(
            "□ boxed points achieved under 85% of the offered rate: requests queued, "
            "so their p99 includes waiting."
        )
    if rows["generator_bound"].any():
        notes.append("○ circled points: " + GENERATOR_NOTE)
    footnote(fig, notes)
    return save(fig, out_dir, "tokens-cost")
