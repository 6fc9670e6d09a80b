"""The runner end to end: the smoke profile, a configuration that fails, the CLI's errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtests", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run(out: Path) -> Path:
    (run_dir,) = list(out.iterdir())
    return run_dir


def summary_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "summary.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def leftovers(since: float) -> list[str]:
    """Return processes a run started (its stores, servers, Locust) that are still alive."""
    found = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        try:
            if p.info["create_time"] < since:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            env = " ".join(p.environ().values())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "authbench-run-" in cmd + env or "locustfile.py" in cmd:
            found.append(cmd)
    return found


def test_smoke_profile_writes_a_complete_verified_run(tmp_path: Path) -> None:
    started = time.time()
    result = run_cli("run", "--profile", "smoke", "--out", str(tmp_path), "--report")
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = only_run(tmp_path)
    assert f"results: {run_dir}" in result.stdout
    assert f"report: {run_dir / 'report.html'}" in result.stdout
    assert (run_dir / "report.md").is_file() and any((run_dir / "charts").glob("*.png"))

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["ended_utc"]
    assert manifest["profile"]["name"] == "smoke"
    assert set(manifest["configurations"]) == {"session-redis", "jwt-hs256"}
    assert manifest["versions"]["packages"]["locust"] != "absent"
    assert manifest["versions"]["stores"]["redis"].startswith("Redis")
    assert len(manifest["dependency_hash"]) == 16
    assert {"commit", "dirty"} <= manifest["git"].keys()
    assert manifest["pinning"]["server_and_stores"] != manifest["pinning"]["locust_and_runner"]

    rows = summary_rows(run_dir)
    assert {(r["config"], r["scenario"]) for r in rows} == {
        (c, s) for c in ("session-redis", "jwt-hs256") for s in ("browse", "login")
    }
    for row in rows:
        assert row["status"] == "ok", row
        assert int(row["requests"]) > 0 and int(row["failures"]) == 0, row
        assert float(row["cpu_us_per_req_server"]) > 0
        assert float(row["p99_ms"]) >= float(row["p50_ms"]) > 0
        cell = run_dir / row["config"] / row["scenario"] / "r1"
        for name in ("verify.json", "requests.csv.gz", "resources.csv", "summary.json"):
            assert (cell / name).is_file(), cell / name
        assert any(cell.glob("locust_stats*.csv"))
        verdict = json.loads((cell / "verify.json").read_text())
        assert {v["outcome"] for v in verdict} <= {"passed", "skipped"}
    assert not leftovers(started)


BROKEN = """
[configs.good]
backend = "session-file"

[configs.tiny-directory]
backend = "session-file"
server = { users = 3 }

[configs.no-redis]
backend = "session-redis"

[profiles.p]
configs = ["tiny-directory", "no-redis", "good"]
scenarios = ["browse"]
rate = 50
users = 2
warmup = 0
duration = 1
"""


def test_failed_configurations_are_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    bench = tmp_path / "bench.toml"
    bench.write_text(BROKEN)
    out = tmp_path / "results"
    # A Redis that is not there: the server refuses to start, the runner carries on.
    result = subprocess.run(
        [sys.executable, "-m", "loadtests", "--file", str(bench), "run", "--profile", "p",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**__import__("os").environ, "REDIS_URL": "redis://127.0.0.1:9/0"},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    rows = {r["config"]: r for r in summary_rows(only_run(out))}
    assert rows["tiny-directory"]["status"] == "unverified"
    assert "login user4" in rows["tiny-directory"]["detail"]
    assert rows["no-redis"]["status"] == "error"
    assert "cannot reach Redis" in rows["no-redis"]["detail"]
    assert rows["good"]["status"] == "ok" and int(rows["good"]["requests"]) > 0
    assert json.loads((only_run(out) / "manifest.json").read_text())["complete"] is True


def test_cli_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    for args, needle in (
        (["run", "--profile", "nope"], "unknown profile 'nope'"),
        (["run", "--profile", "smoke", "--configs", "zzz"], "unknown configuration"),
        (["run", "--profile", "smoke", "--scenarios", "surf"], "unknown scenario"),
        (["run", "--rate", "fast"], "invalid float value"),
    ):
        result = run_cli(*args, "--out", str(tmp_path), timeout=60)
        assert result.returncode in (1, 2), args
        assert needle in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())
