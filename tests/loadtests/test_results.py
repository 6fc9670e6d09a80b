"""Percentiles, the measurement window and the summary, on records the tests write."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import pytest

from loadtests.results import (
    SUMMARY_COLUMNS,
    Record,
    percentile,
    read_records,
    summarize,
    window,
    write_json,
    write_summary_csv,
)

COLUMNS = [
    "t_start", "name", "method", "status", "ok", "latency_ms", "request_head_bytes",
    "credential_bytes", "response_bytes", "st_auth", "st_store", "st_pw", "st_issue", "error",
]  # fmt: skip


def record(t: float, latency: float, *, ok: bool = True, name: str = "/me") -> Record:
    return Record(t, name, 200 if ok else 500, ok, latency, 300, 60, 150, 0.1, 0.05)


def test_percentiles_interpolate_linearly() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99.9) == 7.0
    assert math.isnan(percentile([], 50))


def test_window_starts_after_warmup_of_the_first_request() -> None:
    records = [record(100.0 + i * 0.1, 1.0) for i in range(100)]
    assert window(records, 2.0, 5.0) == (102.0, 107.0)


def test_summary_counts_only_the_window_and_divides_cpu_by_requests() -> None:
    records = [record(100.0 + i * 0.01, 1.0 + i % 10) for i in range(1000)]  # 100 req/s, 10 s
    records[500] = record(105.0, 50.0, ok=False)
    s = summarize(
        records, start=102.0, end=107.0, server_cpu_s=0.5, store_cpu_s=0.1,
        locust_cpu_percent=85.0,
    )  # fmt: skip
    assert s["requests"] == 500
    assert s["failures"] == 1
    assert s["achieved_rps"] == pytest.approx(100.0)
    assert s["cpu_us_per_req_server"] == pytest.approx(1000.0)
    assert s["cpu_us_per_req_store"] == pytest.approx(200.0)
    assert s["max_ms"] == 50.0
    assert s["p50_ms"] == pytest.approx(5.5, abs=0.5)
    assert s["generator_bound"] is True
    assert s["credential_bytes"] == 60 and s["auth_ms"] == pytest.approx(0.1)


def test_unknown_store_cpu_is_not_reported_as_zero() -> None:
    s = summarize(
        [record(1.0, 1.0)], start=0.0, end=2.0, server_cpu_s=0.0, store_cpu_s=None,
        locust_cpu_percent=10.0,
    )  # fmt: skip
    assert math.isnan(s["cpu_us_per_req_store"])
    assert s["generator_bound"] is False


def test_records_round_trip_through_the_gzip_csv(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv.gz"
    with gzip.open(path, "wt", newline="") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        out.writerow([1.5, "/me", "GET", 200, 1, 0.731, 310, 64, 180, 0.12, 0.05, "", "", ""])
        out.writerow([1.6, "/login", "POST", 0, 0, 12.5, 290, 0, 0, "", "", "", "", "refused"])
    first, second = read_records(path)
    assert first == Record(1.5, "/me", 200, True, 0.731, 310, 64, 180, 0.12, 0.05)
    assert second.ok is False and second.st_auth is None and second.status == 0


def test_summary_csv_and_json_write_nan_as_empty(tmp_path: Path) -> None:
    row = {"config": "c", "scenario": "browse", "repeat": 1, "p99_ms": math.nan, "ok": True}
    write_summary_csv(tmp_path / "summary.csv", [row])
    with (tmp_path / "summary.csv").open() as f:
        (written,) = list(csv.DictReader(f))
    assert list(written) == SUMMARY_COLUMNS
    assert written["config"] == "c" and written["p99_ms"] == ""
    write_json(tmp_path / "s.json", row)
    assert '"p99_ms": null' in (tmp_path / "s.json").read_text()
