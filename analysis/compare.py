"""Two runs (or two configurations of one run) side by side, differences tested for noise.

Modelled on pyperformance's compare.py: a difference is only called faster or slower when
a significance test says it is unlikely to be noise, and runs made with different
dependency sets are refused unless forced.

The rule, per metric of one configuration × scenario (the change is B's median against
A's; "significant" needs both the test and a minimum change):

- Both sides have ≥ 2 repeats: Welch's t-test over the per-repeat values (scipy
  `ttest_ind(equal_var=False)`); significant when p < 0.05 and the change is ≥ 1%.
- One side has ≥ 2 repeats, the other one: that side's repeat spread is the noise — a
  one-sample t-test of its values against the single run's value, p < 0.05 and ≥ 1%.
- Single repeats on both sides, latency: the measurement windows' per-request latencies —
  p50 by a two-sided Mann–Whitney U test, p99 by a bootstrap of the p99 difference (400
  resamples, fixed seed, two-sided share) — p < 0.05 and a change of ≥ 5%: per-request
  tests see only the noise inside one run, not the larger noise between runs.
- Single repeats on both sides, achieved req/s and CPU µs per request (no per-request
  samples): a fixed noise band — req/s must move more than 5%; CPU more than 10% and more
  than the CPU clock's resolution (2 ticks of 10 ms spread over the requests measured).

Lower is better for latency and CPU ("faster" = lower), higher for achieved req/s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.aggregate import measured
from analysis.load import MissingData, RunError, UnknownCell, load_manifest, load_requests
from analysis.load import load_summary as _load_summary

ALPHA = 0.05
MIN_CHANGE_REPEATS = 0.01
MIN_CHANGE_REQUESTS = 0.05
BOOTSTRAP_RESAMPLES = 400
BOOTSTRAP_CHUNK = 50
# psutil's CPU times advance in clock ticks; a window's CPU is off by up to ~2 ticks.
CPU_TICK_SECONDS = 0.01
BOOTSTRAP_SEED = 20240607


class DependencyMismatch(RunError):
    """Raised when two runs were made with different dependency sets and not forced."""


@dataclass(frozen=True)
class Metric:
    """One compared column: its label, whether lower is better, and its single-run rule."""

    column: str
    label: str
    lower_is_better: bool
    single: str
    """Single-repeat rule: "mwu" (median), "bootstrap-p99", or "band:<fraction>"."""
    cpu: bool = False
    """A CPU µs figure: its band also covers the CPU clock's resolution."""


METRICS = (
    Metric("p50_ms", "p50 ms", True, "mwu"),
    Metric("p99_ms", "p99 ms", True, "bootstrap-p99"),
    Metric("achieved_rps", "achieved req/s", False, "band:0.05"),
    Metric("cpu_us_per_req_server", "server CPU µs/req", True, "band:0.10", cpu=True),
    Metric("cpu_us_per_req_store", "store CPU µs/req", True, "band:0.10", cpu=True),
)
LatencySource = Callable[[], np.ndarray]


@dataclass(frozen=True)
class Side:
    """One side of a comparison: per-repeat values of a cell and its window latencies."""

    rows: pd.DataFrame
    latencies: LatencySource


def _change(a: float, b: float) -> float:
    return (b - a) / a if a else (math.inf if b else 0.0)


def _label(change: float, significant: bool, lower_is_better: bool) -> str:
    if not significant or change == 0:
        return "noise"
    better = change < 0 if lower_is_better else change > 0
    return "faster" if better else "slower"


def _bootstrap_p99(a: np.ndarray, b: np.ndarray) -> float:
    """Return the two-sided bootstrap share for "the p99 of `b` differs from that of `a`".

    Resampled in chunks so that long windows (many thousands of requests) stay small in memory.
    """
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    diffs = []
    for start in range(0, BOOTSTRAP_RESAMPLES, BOOTSTRAP_CHUNK):
        size = min(BOOTSTRAP_CHUNK, BOOTSTRAP_RESAMPLES - start)
        qa = np.quantile(rng.choice(a, (size, len(a))), 0.99, axis=1)
        qb = np.quantile(rng.choice(b, (size, len(b))), 0.99, axis=1)
        diffs.append(qb - qa)
    above = float(np.mean(np.concatenate(diffs) > 0))
    return 2 * min(above, 1 - above)


def _repeat_test(va: np.ndarray, vb: np.ndarray) -> tuple[float, str]:
    """Return (p, test name) for per-repeat values, at least one side with ≥ 2 of them."""
    if len(va) >= 2 and len(vb) >= 2:
        if np.ptp(va) == 0 and np.ptp(vb) == 0:
            return (1.0 if va[0] == vb[0] else 0.0), "Welch t"
        return float(stats.ttest_ind(va, vb, equal_var=False).pvalue), "Welch t"
    many, single = (va, vb[0]) if len(va) >= 2 else (vb, va[0])
    if np.ptp(many) == 0:
        return (1.0 if many[0] == single else 0.0), "t vs single run"
    return float(stats.ttest_1samp(many, single).pvalue), "t vs single run"


def _cpu_floor(a: Side, b: Side) -> float:
    """Return the CPU µs/request a clock-tick error of 2 ticks amounts to (fewest requests)."""
    counts = pd.concat([a.rows["requests"], b.rows["requests"]]).dropna()
    fewest = float(counts.min()) if len(counts) else 0.0
    return 1e6 * 2 * CPU_TICK_SECONDS / fewest if fewest > 0 else 0.0


def judge(metric: Metric, a: Side, b: Side) -> dict[str, object]:
    """Return median A, median B, their spreads, change, test, p-value and label.

    Raises nothing: a test that cannot run (no samples, no values) labels the row "n/a".
    """
    va = a.rows[metric.column].dropna().to_numpy(dtype=float)
    vb = b.rows[metric.column].dropna().to_numpy(dtype=float)
    row: dict[str, object] = {"metric": metric.label}
    if not len(va) or not len(vb):
        return row | {
            "a": math.nan,
            "b": math.nan,
            "change": math.nan,
            "test": "no data",
            "p": math.nan,
            "label": "n/a",
        }
    ma, mb = float(np.median(va)), float(np.median(vb))
    change = _change(ma, mb)
    row |= {
        "a": ma,
        "a_min": va.min(),
        "a_max": va.max(),
        "n_a": len(va),
        "b": mb,
        "b_min": vb.min(),
        "b_max": vb.max(),
        "n_b": len(vb),
        "change": change,
    }
    if len(va) >= 2 or len(vb) >= 2:
        p, test = _repeat_test(va, vb)
        significant = p < ALPHA and abs(change) >= MIN_CHANGE_REPEATS
        return row | {
            "test": test,
            "p": p,
            "label": _label(change, significant, metric.lower_is_better),
        }
    if metric.single.startswith("band:"):
        band = float(metric.single.split(":")[1])
        floor = _cpu_floor(a, b) if metric.cpu else 0.0
        significant = abs(change) > band and abs(mb - ma) > floor
        test = f"±{band:.0%} band" + (f", ≥{floor:.3g} µs" if floor else "")
        return row | {
            "test": test,
            "p": math.nan,
            "label": _label(change, significant, metric.lower_is_better),
        }
    la, lb = a.latencies(), b.latencies()
    if len(la) < 2 or len(lb) < 2:
        return row | {"test": "no records", "p": math.nan, "label": "n/a"}
    if metric.single == "mwu":
        p = float(stats.mannwhitneyu(la, lb, alternative="two-sided").pvalue)
        test = "Mann-Whitney U"
    else:
        p, test = _bootstrap_p99(la, lb), "bootstrap p99"
    significant = p < ALPHA and abs(change) >= MIN_CHANGE_REQUESTS
    return row | {
        "test": test,
        "p": p,
        "label": _label(change, significant, metric.lower_is_better),
    }


def _latencies(run: Path, config: str, scenario: str, repeats: list[int]) -> LatencySource:
    def load() -> np.ndarray:
        parts = []
        for repeat in repeats:
            try:
                df = load_requests(
                    run, config, scenario, repeat, window=True, columns=["latency_ms"]
                )
            except MissingData:
                continue
            parts.append(df["latency_ms"].to_numpy(dtype=float))
        return np.concatenate(parts) if parts else np.array([])

    return load


def _side(run: Path, rows: pd.DataFrame, config: str, scenario: str) -> Side:
    cell = rows[(rows["config"] == config) & (rows["scenario"] == scenario)]
    repeats = [int(r) for r in cell["repeat"].dropna()]
    return Side(cell, _latencies(run, config, scenario, repeats))


def _compare_cells(
    pairs: list[tuple[str, str, str]],
    run_a: Path,
    rows_a: pd.DataFrame,
    run_b: Path,
    rows_b: pd.DataFrame,
    config_b: Callable[[str], str],
) -> pd.DataFrame:
    out = []
    for config, scenario, mode in pairs:
        a = _side(run_a, rows_a, config, scenario)
        b = _side(run_b, rows_b, config_b(config), scenario)
        for metric in METRICS:
            out.append(
                {"config": config, "scenario": scenario, "mode": mode, **judge(metric, a, b)}
            )
    return pd.DataFrame(out)


def compare_runs(run_a: Path, run_b: Path, *, force: bool = False) -> pd.DataFrame:
    """Return one row per configuration × scenario × metric present (measured) in both runs.

    Columns: config, scenario, mode, metric, a, a_min, a_max, n_a, b, b_min, b_max, n_b,
    change (relative, B vs A), test, p, label ("faster" / "slower" / "noise" / "n/a").
    Raises DependencyMismatch if the runs' dependency hashes differ and not `force`, and
    RunError if either folder is not a run.
    """
    ma, mb = load_manifest(run_a), load_manifest(run_b)
    ha, hb = ma.get("dependency_hash"), mb.get("dependency_hash")
    if ha != hb and not force:
        raise DependencyMismatch(
            f"runs were made with different dependency sets ({ha} vs {hb}); "
            "pass --force to compare anyway"
        )
    rows_a, rows_b = measured(_load_summary(run_a)), measured(_load_summary(run_b))
    keys_b = set(zip(rows_b["config"], rows_b["scenario"], rows_b["mode"], strict=True))
    pairs = list(
        dict.fromkeys(
            k
            for k in zip(rows_a["config"], rows_a["scenario"], rows_a["mode"], strict=True)
            if k in keys_b
        )
    )
    return _compare_cells(pairs, run_a, rows_a, run_b, rows_b, lambda c: c)


def compare_configs(run: Path, config_a: str, config_b: str) -> pd.DataFrame:
    """Return config B against config A inside one run, per scenario both measured.

    Same columns as `compare_runs` (config holds "A → B"). Raises UnknownCell if either
    configuration is not in the run or has no measured scenario in common with the other.
    """
    manifest = load_manifest(run)
    for name in (config_a, config_b):
        if name not in manifest["configurations"]:
            known = ", ".join(manifest["configurations"])
            raise UnknownCell(f"{Path(run).name}: unknown configuration {name!r} (known: {known})")
    rows = measured(_load_summary(run))
    cells_a = rows[rows["config"] == config_a][["scenario", "mode"]].drop_duplicates()
    cells_b = rows[rows["config"] == config_b][["scenario", "mode"]].drop_duplicates()
    common = cells_a.merge(cells_b)
    if common.empty:
        raise UnknownCell(f"{config_a} and {config_b} have no measured scenario in common")
    pairs = [(config_a, s, m) for s, m in common.itertuples(index=False)]
    table = _compare_cells(pairs, Path(run), rows, Path(run), rows, lambda _c: config_b)
    table["config"] = f"{config_a} → {config_b}"
    return table


def offered_rate_notes(run_a: Path, run_b: Path) -> list[str]:
    """Return a note per scenario whose offered rate differs between the runs."""
    ra = load_manifest(run_a).get("profile", {}).get("offered_rps", {})
    rb = load_manifest(run_b).get("profile", {}).get("offered_rps", {})
    return [
        f"offered rate of {s} differs: {ra[s]:g} vs {rb[s]:g} req/s — latencies are not "
        "at equal load"
        for s in ra
        if s in rb and ra[s] != rb[s]
    ]


def _value(row: pd.Series, side: str) -> str:
    value = row.get(side)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:,.4g}"
    n = row.get(f"n_{side}")
    if isinstance(n, int | float) and not math.isnan(n) and n > 1:
        text += f" ({row[f'{side}_min']:,.4g}–{row[f'{side}_max']:,.4g}, n={n:.0f})"
    return text


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def format_comparison(table: pd.DataFrame, name_a: str, name_b: str, notes: list[str]) -> str:
    """Return the comparison as aligned text: one block per cell, a count of verdicts last."""
    lines = [
        f"A: {name_a}",
        f"B: {name_b}",
        "B against A; faster/slower only where the test finds the change significant "
        "(rule: analysis/compare.py).",
    ]
    lines += [f"note: {n}" for n in notes]
    if table.empty:
        return "\n".join([*lines, "", "no configuration × scenario measured in both"])
    head = f"  {'metric':<19}{'A':<29}{'B':<29}{'change':>8}  {'verdict':<8} test"
    for (config, scenario), rows in table.groupby(["config", "scenario"], sort=False):
        lines += ["", f"{config} · {scenario}", head]
        for _, r in rows.iterrows():
            change = r["change"]
            shown = "–" if pd.isna(change) else f"{100 * float(change):+.1f}%"
            p = "" if pd.isna(r.get("p")) else f" ({_p_text(float(r['p']))})"
            lines.append(
                f"  {r['metric']:<19}{_value(r, 'a'):<29}{_value(r, 'b'):<29}"
                f"{shown:>8}  {r['label']:<8} {r['test']}{p}"
            )
    counts = table["label"].value_counts()
    lines += [
        "",
        ", ".join(f"{counts.get(k, 0)} {k}" for k in ("faster", "slower", "noise", "n/a")),
    ]
    return "\n".join(lines)


def unmatched(run_a: Path, run_b: Path) -> list[str]:
    """Return notes naming the measured cells (config/scenario, mode) only one run has."""
    keys = []
    for run in (run_a, run_b):
        rows = measured(_load_summary(run))
        keys.append(set(zip(rows["config"], rows["scenario"], rows["mode"], strict=True)))
    notes = []
    for name, only in (("A", keys[0] - keys[1]), ("B", keys[1] - keys[0])):
        if only:
            shown = ", ".join(f"{c}/{s} ({m})" for c, s, m in sorted(only)[:8])
            more = f" and {len(only) - 8} more" if len(only) > 8 else ""
            notes.append(f"only in {name}: {shown}{more}")
    return notes
