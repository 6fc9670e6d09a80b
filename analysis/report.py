"""The run report: RUN/report.html (one self-contained file) and RUN/report.md.

Written for someone who never ran authbench: what was measured and how, the numbers per
configuration, every chart with how to read it, and the properties the numbers trade
against (revocation, reuse detection, server state, scale-out).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import aggregate
from analysis.charts import Chart, draw_all
from analysis.document import (
    Block,
    Bullets,
    Cell,
    Figure,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from analysis.load import load_hot_path_bytes, load_manifest, load_summary
from analysis.options import config_options, describe
from analysis.palette import GENERATOR_MARK
from analysis.properties import COLUMNS as PROPERTY_COLUMNS
from analysis.properties import properties

INTRO = (
    "authbench serves the same login / read / logout / refresh endpoints from every "
    "authentication mechanism — server-side sessions on files, PostgreSQL, Redis or "
    "memcached, and JWTs with or without a revocation list — checks that each one behaves "
    "correctly, then loads them all with the same traffic and measures latency, CPU per "
    "request and bytes on the wire. The numbers only mean something next to what each "
    "mechanism can and cannot do, so the properties table comes with them."
)
HOW_TO_USE = [
    "Start with the properties table: decide which guarantees you need — a logout that takes "
    "effect at once, detection of stolen refresh tokens, instances that share nothing.",
    "Among the configurations that qualify, compare CPU per request (what the servers cost) "
    "and p99 latency (what users feel), both measured at the same offered load.",
    "Bytes per request matter at volume and on slow links: every 100 bytes more is 100 GB "
    "more per billion requests.",
    "Small differences may be noise: read the repeat spread in brackets, and use "
    "`python -m analysis compare` to test two runs against each other.",
]
GLOSSARY = [
    "p50 / p95 / p99: the latency that 50% / 95% / 99% of requests stayed under; p99 is "
    "what one visit in a hundred feels.",
    "offered vs achieved rate: requests per second the load generator aimed for and what "
    "was actually served; every configuration gets the same offered rate.",
    "CPU µs per request: CPU time of the server (and of its store) during the measurement "
    "window divided by the requests served — the cost figure that does not depend on how "
    "fast the load generator was.",
    f"generator-bound ({GENERATOR_MARK}): the load generator used over 80% of its CPU, so "
    "part of the latency is the generator's own queueing, not the server's.",
    "refresh rotation and reuse detection: each refresh returns a new refresh token; "
    "presenting an already-used one reveals theft and revokes the whole token family.",
    "denylist: JWT ids revoked at logout are stored until the token would expire and "
    "checked on every request — revocation at the price of a store lookup.",
]


def fmt(value: Any, digits: int = 3) -> str:
    """Return a number for a table: 3 significant digits, thousands separated, '–' for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    v = float(value)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _spread(row: pd.Series, column: str) -> str:
    text = fmt(row[column])
    if row.get("repeats", 1) > 1 and f"{column}_min" in row:
        text += f" ({fmt(row[f'{column}_min'])}–{fmt(row[f'{column}_max'])})"
    return text


def _flags(row: pd.Series) -> str:
    flags = []
    if bool(row["generator_bound"]):
        flags.append(f"{GENERATOR_MARK} generator-bound")
    if not bool(row["kept_up"]):
        flags.append("‡ fell behind the offered rate")
    if row.get("failures", 0) and row["failures"] > 0:
        flags.append(f"{row['failures']:.0f} failed requests")
    if row.get("detail"):
        flags.append(str(row["detail"]))
    return "; ".join(flags)


def summary_table(cells: pd.DataFrame) -> Table:
    """Return the per-configuration × scenario table of headline numbers (medians, spread)."""
    max_mode = bool((cells["mode"] == "max").any())
    header = [
        "Configuration",
        "Scenario",
        "Repeats",
        "Offered → achieved req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "Server µs/req",
        "Store µs/req",
        "≈ req/s per core",
        "Credential B",
        "Head B (/me)",
        "Flags",
    ]
    if max_mode:
        header.insert(4, "Capacity req/s")
    head_column = "me_head_bytes" if "me_head_bytes" in cells else "request_head_bytes"
    rows: list[list[str | Cell]] = []
    for _, r in cells.iterrows():
        total = r["cpu_us_per_req"]
        row: list[str | Cell] = [
            r["config"],
            r["scenario"],
            f"{r['repeats']:.0f}",
            f"{fmt(r['offered_rps'])} → {fmt(r['achieved_rps'])}"
            if r["mode"] != "max"
            else f"max → {fmt(r['achieved_rps'])}",
            _spread(r, "p50_ms"),
            _spread(r, "p95_ms"),
            _spread(r, "p99_ms"),
            _spread(r, "cpu_us_per_req_server"),
            fmt(r["cpu_us_per_req_store"]),
            fmt(1e6 / total) if total > 0 else "–",
            fmt(r["credential_bytes"]),
            fmt(r.get(head_column)),
            Cell(_flags(r), "flag"),
        ]
        if max_mode:
            row.insert(4, fmt(r.get("capacity_rps")))
        rows.append(row)
    return Table(header, rows, numeric_from=2, numeric_to=len(header) - 1)


def properties_table(manifest: dict[str, Any], cells: pd.DataFrame, scenario: str) -> Table:
    """Return one row per configuration of the manifest: its properties, bytes and CPU.

    Bytes and CPU come from `scenario` (the hot path); configurations without a measured
    row say so instead.
    """
    header = [
        "Configuration",
        "What it is",
        *(title for _, title in PROPERTY_COLUMNS),
        "Bytes per request",
        "CPU µs per request",
    ]
    measured = cells[cells["scenario"] == scenario].set_index("config")
    head_column = "me_head_bytes" if "me_head_bytes" in cells else "request_head_bytes"
    rows: list[list[str | Cell]] = []
    for name, config in manifest["configurations"].items():
        options = config_options(name, config)
        props = properties(options)
        row: list[str | Cell] = [name, describe(options)]
        row += [Cell(props[key].text, props[key].verdict.value) for key, _ in PROPERTY_COLUMNS]
        if name in measured.index:
            m = measured.loc[name]
            row.append(f"{fmt(m[head_column])} B head, {fmt(m['credential_bytes'])} B credential")
            row.append(
                f"{fmt(m['cpu_us_per_req'])} (server {fmt(m['cpu_us_per_req_server'])}"
                f", store {fmt(m['cpu_us_per_req_store'])})"
            )
        else:
            row += [Cell("not measured", "flag"), Cell("not measured", "flag")]
        rows.append(row)
    return Table(header, rows, css="properties", numeric_from=len(header))


def headlines(manifest: dict[str, Any], cells: pd.DataFrame, scenario: str) -> list[str]:
    """Return plain-language findings of the run (cheapest, fastest, smallest, revocation)."""
    rows = cells[(cells["scenario"] == scenario) & cells["cpu_us_per_req"].notna()]
    out = []
    if len(rows) > 1:
        lo, hi = (
            rows.loc[rows["cpu_us_per_req"].idxmin()],
            rows.loc[rows["cpu_us_per_req"].idxmax()],
        )
        out.append(
            f"Cheapest per {scenario} request: {lo['config']} at {fmt(lo['cpu_us_per_req'])} µs "
            f"of CPU (≈{fmt(1e6 / lo['cpu_us_per_req'])} req/s per core); most expensive: "
            f"{hi['config']} at {fmt(hi['cpu_us_per_req'])} µs."
        )
        timed = rows[(rows["mode"] == "latency") & rows["p99_ms"].notna()]
        if len(timed) > 1:
            fast, slow = timed.loc[timed["p99_ms"].idxmin()], timed.loc[timed["p99_ms"].idxmax()]
            out.append(
                f"Lowest p99 at {fmt(fast['offered_rps'])} req/s offered: {fast['config']} "
                f"({fmt(fast['p99_ms'])} ms); highest: {slow['config']} ({fmt(slow['p99_ms'])} ms)."
            )
        sized = rows[rows["credential_bytes"].notna()]
        if len(sized) > 1:
            least, most = sized["credential_bytes"].min(), sized["credential_bytes"].max()
            small = list(sized.loc[sized["credential_bytes"] == least, "config"])
            big = list(sized.loc[sized["credential_bytes"] == most, "config"])
            out.append(
                f"Smallest credential: {_names(small)} ({fmt(least)} B per request); "
                f"largest: {_names(big)} ({fmt(most)} B)."
            )
    revocable: list[str] = []
    expiring: list[str] = []
    for name, config in manifest["configurations"].items():
        verdict = properties(config_options(name, config))["revocation"].verdict.value
        (revocable if verdict == "good" else expiring).append(name)
    if revocable and expiring:
        out.append(
            f"Immediate revocation: {_names(revocable)}. Relying on expiry instead: "
            f"{_names(expiring)} — a leaked token keeps working until it runs out."
        )
    return out


def _names(names: list[str], shown: int = 5) -> str:
    if len(names) <= shown + 1:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f" and {len(names) - shown} more"


def warnings(manifest: dict[str, Any], summary: pd.DataFrame, cells: pd.DataFrame) -> list[str]:
    """Return the caveats a reader must see before trusting the numbers."""
    out = []
    if not manifest.get("complete"):
        out.append("This run is incomplete (interrupted); some configurations are missing.")
    bound = cells[cells["generator_bound"]]
    if len(bound):
        out.append(
            f"{GENERATOR_MARK} Generator-bound (load generator over 80% CPU): "
            + ", ".join(f"{r.config}/{r.scenario}" for r in bound.itertuples())
            + ". Their latency partly measures the generator."
        )
    behind = cells[~cells["kept_up"].astype(bool)]
    if len(behind):
        out.append(
            "‡ Fell behind the offered rate (achieved under 85%): "
            + ", ".join(f"{r.config}/{r.scenario}" for r in behind.itertuples())
            + ". Requests queued, so their latency includes waiting."
        )
    if int(manifest.get("profile", {}).get("repeat", 1)) < 2:
        out.append(
            "Each configuration ran once: there is no spread to tell small differences "
            "from noise. The `full` profile repeats every measurement three times."
        )
    if manifest.get("git", {}).get("dirty"):
        out.append("The code had uncommitted changes when this run was made.")
    return out


def method_line(manifest: dict[str, Any]) -> str:
    """Return one sentence saying where and how the run was measured (details at the end)."""
    p = manifest.get("profile", {})
    machine = manifest.get("machine", {})
    rates = ", ".join(f"{s} at {r:,.0f} req/s" for s, r in p.get("offered_rps", {}).items())
    load = "step load up to capacity" if p.get("mode") == "max" else f"offered {rates}"
    return (
        f"Measured on {machine.get('cpu_model', '?')} ({machine.get('cores', '?')} cores): "
        f"{load}; {p.get('users')} simulated users; {p.get('warmup_s')} s warm-up, then a "
        f"{p.get('duration_s')} s measurement window; {p.get('repeat')} repeat(s). "
        "Full method and versions at the end."
    )


def _chart_blocks(charts: list[Chart]) -> list[Block]:
    blocks: list[Block] = []
    for chart in charts:
        blocks.append(Heading(chart.title, 3))
        if chart.png is None:
            blocks.append(Paragraph(chart.skipped, "note"))
        else:
            blocks.append(Figure(chart.title, chart.png, chart.paths, chart.how_to_read))
    return blocks


def _not_measured(summary: pd.DataFrame) -> list[str]:
    rows = aggregate.not_measured(summary)
    rows = rows.drop_duplicates(["config", "repeat", "status", "detail"])
    return [
        f"{r.config} (repeat {r.repeat:.0f}): {r.status} — {r.detail or 'no detail'}"
        for r in rows.itertuples()
    ]


def build(run: Path) -> tuple[str, list[Block]]:
    """Return the report's title and blocks for `run`, drawing its charts on the way.

    Raises analysis.load.RunError if `run` is not a readable run.
    """
    manifest = load_manifest(run)
    summary = load_summary(run)
    cells = aggregate.by_cell(summary, load_hot_path_bytes(run))
    scenario = aggregate.primary_scenario(summary) or "browse"
    charts = draw_all(run, cells=cells)
    blocks: list[Block] = [Paragraph(INTRO), Paragraph(method_line(manifest), "note")]
    blocks += [Heading("How to use this report"), Bullets(HOW_TO_USE)]
    blocks += [Paragraph(w, "warning") for w in warnings(manifest, summary, cells)]
    found = headlines(manifest, cells, scenario)
    if found:
        blocks += [Heading("What this run shows"), Bullets(found)]
    blocks += [
        Heading("Properties: what each configuration can and cannot do"),
        Paragraph(
            "Derived from each configuration's backend and options. Green is the "
            "safer or simpler answer, red the weaker one, yellow partial. Bytes and "
            f"CPU are from the {scenario} scenario (one authenticated read)."
        ),
        properties_table(manifest, cells, scenario),
    ]
    blocks += [
        Heading("Numbers per configuration"),
        Paragraph(
            "Medians over repeats, with the fastest–slowest repeat in brackets "
            "when there are several. Latency covers every request of the "
            "measurement window (warm-up excluded)."
        ),
        summary_table(cells) if len(cells) else Paragraph("Nothing was measured.", "warning"),
    ]
    missing = _not_measured(summary)
    if missing:
        blocks += [
            Heading("Not measured"),
            Paragraph(
                "These failed verification or could not start; a configuration "
                "is only loaded after it proves it behaves correctly."
            ),
            Bullets(missing),
        ]
    blocks += [Heading("Charts"), *_chart_blocks(charts)]
    facts = aggregate.method_facts(manifest)
    blocks += [
        Heading("How this run was made"),
        Table(["", ""], [[k, v] for k, v in facts], css="facts", numeric_from=2),
        Heading("Words used in this report"),
        Bullets(GLOSSARY),
    ]
    return f"authbench report — {manifest.get('run_id', Path(run).name)}", blocks


def write_report(run: Path) -> tuple[Path, Path]:
    """Write RUN/report.html (self-contained) and RUN/report.md; return (html, md) paths.

    Charts are (re)drawn into RUN/charts. Raises analysis.load.RunError if `run` is not a
    readable run.
    """
    run = Path(run)
    title, blocks = build(run)
    html_path, md_path = run / "report.html", run / "report.md"
    html_path.write_text(to_html(title, blocks), encoding="utf-8")
    md_path.write_text(to_markdown(title, blocks, run), encoding="utf-8")
    return html_path, md_path
