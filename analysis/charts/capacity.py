"""Latency against load from `max` runs: where each configuration bends."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D

from analysis.charts.figure import THOUSANDS, footnote, new_figure, save, styled
from analysis.palette import colour, style_for, tint

HOW_TO_READ = (
    "Each line is one configuration stepped from few to many concurrent users; "
    "x is the throughput it reached, y the latency (log scale), point labels the user count.",
    "A line that shoots up while moving little to the right has hit its capacity (★): "
    "more users only queue. Filled points: server CPU saturated; hollow: the load generator was.",
)
SATURATION_LABELS = {
    "server": "filled: server CPU saturated (≥90%)",
    "neither": "light: neither side saturated",
    "generator": "hollow: load generator saturated",
}
NO_DATA_NOTE = (
    "No max-mode data in this run: latency against load needs a run with "
    "`python -m loadtests run --mode max`."
)


def steps_by_users(steps: pd.DataFrame) -> pd.DataFrame:
    """Return one row per configuration × scenario × user step, repeats folded by median.

    `saturated` keeps the most common verdict across repeats.
    """
    keys = ["config", "scenario", "backend", "users"]
    grouped = steps.groupby(keys, sort=False)
    out = grouped[["achieved_rps", "p50_ms", "p99_ms", "failures"]].median()
    out["saturated"] = grouped["saturated"].agg(lambda s: s.mode().iloc[0])
    return out.reset_index()


def _face(saturated: str, c: str) -> str:
    """Return the marker face colour saying which side was saturated at a step."""
    return {"server": c, "generator": "white"}.get(saturated, tint(c, 0.6))


@styled
def latency_vs_load(steps: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Draw p50 and p99 against achieved throughput per configuration as latency-vs-load.*.

    `steps` is `analysis.load.load_all_steps` output. Returns the written paths, or []
    when the run has no max-mode steps (the report then shows `NO_DATA_NOTE`).
    """
    if steps.empty:
        return []
    folded = steps_by_users(steps)
    scenarios = list(dict.fromkeys(folded["scenario"]))
    fig = new_figure(4.8)
    axes = fig.subplots(1, len(scenarios), squeeze=False, sharey=True)[0]
    per_backend: dict[str, int] = {}
    handles = []
    for config, backend in folded[["config", "backend"]].drop_duplicates().itertuples(index=False):
        index = per_backend.get(backend, 0)
        per_backend[backend] = index + 1
        linestyle, marker = style_for(index)
        c = colour(str(backend))
        handles.append(Line2D([], [], color=c, linestyle=linestyle, marker=marker, label=config))
        for ax, scenario in zip(axes, scenarios, strict=True):
            rows = folded[(folded["config"] == config) & (folded["scenario"] == scenario)]
            rows = rows.sort_values("users")
            if rows.empty:
                continue
            x = rows["achieved_rps"]
            ax.plot(x, rows["p99_ms"], color=c, linestyle=linestyle, lw=1.7)
            ax.plot(x, rows["p50_ms"], color=c, linestyle=linestyle, lw=0.9, alpha=0.55)
            for row in rows.itertuples():
                ax.plot(
                    row.achieved_rps,
                    row.p99_ms,
                    marker=marker,
                    color=c,
                    markersize=6.5,
                    markerfacecolor=_face(str(row.saturated), c),
                )
                ax.annotate(
                    f"{row.users:g}u",
                    (row.achieved_rps, row.p99_ms),
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize=7,
                    color="#555555",
                )
            best = rows.loc[rows["achieved_rps"].idxmax()]
            ax.plot(
                best["achieved_rps"],
                best["p99_ms"],
                marker="*",
                markersize=15,
                color=c,
                markeredgecolor="black",
                markeredgewidth=0.6,
                zorder=5,
            )
    for ax, scenario in zip(axes, scenarios, strict=True):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(THOUSANDS)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_formatter(THOUSANDS)
        ax.set_xlabel("throughput reached (requests/s)")
        ax.set_title(f"{scenario} — closed-loop users stepped up")
    axes[0].set_ylabel("latency (ms, log scale): thick p99, thin p50")
    handles.append(
        Line2D(
            [],
            [],
            marker="*",
            color="#444444",
            linestyle="none",
            markersize=12,
            label="capacity (highest throughput)",
        )
    )
    for verdict, text in SATURATION_LABELS.items():
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                color="#444444",
                linestyle="none",
                markerfacecolor=_face(verdict, "#444444"),
                label=text,
            )
        )
    fig.legend(handles=handles, loc="outside right upper")
    fig.suptitle("Latency against load: where each configuration bends", x=0.02, ha="left")
    footnote(fig, ["Each step's first second is ramp-up and not measured; medians over repeats."])
    return save(fig, out_dir, "latency-vs-load")
