"""Distributed Locust and remote servers: a master and workers on loopback, records merged.

The end-to-end runs use the real CLI, real Locust master/worker processes and a real server;
everything listens on 127.0.0.1.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from loadtests.launch import wait_healthy
from loadtests.locust_process import history_counts
from loadtests.results import RECORD_COLUMNS, merge_records, worker_record_files
from loadtests.stores import free_port
from tests.loadtests.test_runner import only_run, run_cli, summary_rows

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def write_records(path: Path, starts: list[float], name: str = "/me") -> None:
    with gzip.open(path, "wt", newline="") as f:
        out = csv.writer(f)
        out.writerow(RECORD_COLUMNS)
        for t in starts:
            out.writerow([t, name, "GET", 200, 1, 1.5, 100, 40, 200, "", "", "", "", ""])


def read_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def locust_count(cell: Path) -> int:
    """Return the requests Locust's own statistics counted in a cell (every worker's)."""
    with (cell / "locust_stats.csv").open(newline="") as f:
        (row,) = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    return int(row["Request Count"])


# --- units ---


def test_merge_sorts_every_workers_records_by_start(tmp_path: Path) -> None:
    write_records(tmp_path / "requests-w0.csv.gz", [1.0, 3.0, 5.0])
    write_records(tmp_path / "requests-w1.csv.gz", [2.0, 4.0])
    write_records(tmp_path / "requests-w10.csv.gz", [0.5])
    (tmp_path / "requests-w2.csv.gz.partial").write_text("being written")
    parts = worker_record_files(tmp_path)
    assert [p.name for p in parts] == [f"requests-w{i}.csv.gz" for i in (0, 1, 10)]
    out = tmp_path / "requests.csv.gz"
    assert merge_records(parts, out) == 6
    assert [float(r["t_start"]) for r in read_rows(out)] == [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_merge_refuses_files_of_different_columns(tmp_path: Path) -> None:
    write_records(tmp_path / "requests-w0.csv.gz", [1.0])
    with gzip.open(tmp_path / "requests-w1.csv.gz", "wt") as f:
        f.write("t_start,name\n2.0,/me\n")
    with pytest.raises(ValueError, match="columns differ"):
        merge_records(worker_record_files(tmp_path), tmp_path / "requests.csv.gz")


def test_history_counts_interpolate_locusts_totals(tmp_path: Path) -> None:
    rows = [
        "Timestamp,User Count,Type,Name,Requests/s,Total Request Count,Total Failure Count",
        "100,2,,Aggregated,0,0,0",
        "101,2,GET,/me,10,10,0",
        "101,2,,Aggregated,10,10,0",
        "103,2,,Aggregated,10,30,2",
    ]
    (tmp_path / "locust_stats_history.csv").write_text("\n".join(rows) + "\n")
    assert history_counts(tmp_path, 100.5, 102.0) == (15, 1)
    assert history_counts(tmp_path / "nothing", 0, 1) is None


def test_a_worker_takes_its_own_users_and_records_file() -> None:
    # Importing the locustfile patches the process with gevent: ask a child.
    code = (
        "from loadtests.locustfile import LoadSettings\n"
        "s = LoadSettings.from_env({'AUTHBENCH_USER_OFFSET': '5', 'AUTHBENCH_USER_STRIDE': '4',"
        " 'AUTHBENCH_RECORDS': '/r/run/c/browse/r1/requests.csv.gz',"
        " 'AUTHBENCH_RECORDS_NAME': 'run/c/browse/r1/requests.csv.gz'})\n"
        "for i, d in ((0, None), (3, None), (2, '/elsewhere')):\n"
        "    w = s.for_worker(i, d)\n"
        "    print(w.offset, w.records)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "5 /r/run/c/browse/r1/requests-w0.csv.gz",
        "17 /r/run/c/browse/r1/requests-w3.csv.gz",
        "13 /elsewhere/run/c/browse/r1/requests-w2.csv.gz",
    ]


# --- end to end ---


def test_smoke_with_a_master_and_two_local_workers_merges_one_complete_result(
    tmp_path: Path,
) -> None:
    result = run_cli("run", "--profile", "smoke", "--locust-workers", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = only_run(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["locust"] == {
        "mode": "master/worker",
        "workers": 2,
        "workers_where": "local (loopback)",
    }
    rows = summary_rows(run_dir)
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "ok" and int(row["failures"]) == 0, row
        assert float(row["cpu_us_per_req_server"]) > 0
        cell = run_dir / row["config"] / row["scenario"] / "r1"
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["records"] == "complete" and summary["locust_workers"] == 2
        # One merged file, in time order, holding every request Locust counted on any worker.
        assert not worker_record_files(cell)
        merged = read_rows(cell / "requests.csv.gz")
        starts = [float(r["t_start"]) for r in merged]
        assert starts == sorted(starts)
        assert len(merged) == locust_count(cell) > 0
        assert {p.name for p in cell.glob("locust-worker*.log")} == {
            "locust-worker1.log",
            "locust-worker2.log",
        }
        with (cell / "resources.csv").open(newline="") as f:
            groups = {r["group"] for r in csv.DictReader(f)}
        assert {"locust", "locust:main", "locust:worker1", "locust:worker2"} <= groups


@contextmanager
def running(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_remote_server_and_remote_worker_then_merge(tmp_path: Path) -> None:
    sessions, elsewhere, out = tmp_path / "sessions", tmp_path / "worker-disk", tmp_path / "out"
    sessions.mkdir()
    port, master_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    server = [sys.executable, "-m", "servers", "--backend", "session-file"]
    server += ["--session-dir", str(sessions), "--host", "127.0.0.1", "--port", str(port)]
    # A worker as on another machine: no AUTHBENCH_* settings, its own disk for records.
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHBENCH_")}
    worker_env["AUTHBENCH_RECORDS_DIR"] = str(elsewhere)
    worker = [str(BIN / "locust"), "-f", "loadtests/locustfile.py", "--worker"]
    worker += ["--master-host", "127.0.0.1", "--master-port", str(master_port)]
    with (
        running(server, tmp_path / "server.log"),
        running(worker, tmp_path / "worker.log", worker_env),
    ):
        assert wait_healthy(url, 30) is None
        result = run_cli(
            "run", "--profile", "smoke", "--configs", "session-file", "--scenarios", "login",
            "--server-url", url, "--session-dir", str(sessions),
            "--locust-workers", "1", "--locust-master-host", "127.0.0.1",
            "--locust-master-port", str(master_port), "--out", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert wait_healthy(url, 1) is None, "the runner must not stop a server it did not start"
    run_dir = only_run(out)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["server"] == {"url": url, "started_by_runner": False, "cpu": "unavailable"}
    assert manifest["pinning"]["server_and_stores"] == []
    assert not list(run_dir.glob("*/server-r*.log"))
    (row,) = summary_rows(run_dir)
    cell = run_dir / "session-file" / "login" / "r1"
    # CPU of a server elsewhere is unavailable, not zero; the records are on the worker's disk.
    assert row["status"] == "ok" and int(row["requests"]) > 0
    assert row["cpu_us_per_req_server"] == row["cpu_us_per_req_store"] == ""
    assert "CPU per request unavailable" in row["detail"] and "merge" in row["detail"]
    assert row["p50_ms"] == ""
    line = next(x for x in result.stdout.splitlines() if x.startswith("session-file"))
    assert line.split()[5:7] == ["n/a", "n/a"]
    assert json.loads((cell / "summary.json").read_text())["records"] == "partial: 0 of 1 workers"

    # Copy the worker's files into the run, as from another machine, and merge.
    shutil.copytree(elsewhere / run_dir.name, run_dir, dirs_exist_ok=True)
    merged = run_cli("merge", str(run_dir), timeout=60)
    assert merged.returncode == 0, merged.stderr
    assert "session-file/login/r1: records complete" in merged.stderr
    (row,) = summary_rows(run_dir)
    assert float(row["p50_ms"]) > 0 and row["cpu_us_per_req_server"] == ""
    assert "merge" not in row["detail"] and "unavailable" in row["detail"]
    records = read_rows(cell / "requests.csv.gz")
    # The worker ran the master's scenario (login), which it was never told but by Locust.
    assert {r["name"] for r in records} == {"/login", "/me", "/logout"}
    assert len(records) == locust_count(cell)
    assert not worker_record_files(cell)


BAD_DISTRIBUTION = [
    (["--locust-workers", "-1"], "must be 0 or more"),
    (["--locust-master-host", "127.0.0.1"], "needs --locust-workers N"),
    (["--server-url", "http://127.0.0.1:9"], "--configs NAME"),
    (["--server-url", "ftp://x", "--configs", "jwt-hs256"], "expected http://HOST:PORT"),
    (["--server-url", "http://127.0.0.1:9/api", "--configs", "jwt-hs256"], "without a path"),
    (["--server-url", "http://127.0.0.1:9", "--configs", "session-redis"], "REDIS_URL"),
    (["--server-url", "http://127.0.0.1:9", "--configs", "session-file"], "SESSION_DIR"),
]


def test_cli_refuses_bad_distribution_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SESSION_DIR")}

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loadtests", "run", "--profile", "smoke", *args,
             "--out", str(tmp_path)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    # Side by side: each is a fresh interpreter that fails at once.
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, [args for args, _ in BAD_DISTRIBUTION]))
    for (args, needle), done in zip(BAD_DISTRIBUTION, results, strict=True):
        assert done.returncode in (1, 2), (args, done.stderr)
        assert needle in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


def test_merge_of_something_not_a_run_fails_in_one_line(tmp_path: Path) -> None:
    done = run_cli("merge", str(tmp_path), timeout=60)
    assert done.returncode == 1
    assert "not a run folder" in done.stderr and done.stderr.count("\n") == 1
