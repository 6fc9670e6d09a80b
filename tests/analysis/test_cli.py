"""`python -m analysis`: one line and exit 1 for user mistakes, 2 for usage, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.__main__ import latest_run, main
from tests.analysis.runs import make_run


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_report_prints_the_html_path(latency_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(latency_run)]) == 0
    assert capsys.readouterr().out.strip() == str(latency_run / "report.html")


def test_report_latest_picks_the_newest_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(tmp_path, ["session-redis"], name="20260101-000000-smoke")
    newest = make_run(tmp_path, ["session-redis"], name="20260102-000000-smoke")
    (tmp_path / "not-a-run").mkdir()
    assert latest_run(tmp_path) == newest
    assert main(["report", "--latest", "--results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(newest / "report.html")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "/nonexistent/run"], "no such folder"),
        (["report", "{tmp}"], "not an authbench run"),
        (["report", "--latest", "--results", "{tmp}"], "no run folders"),
        (["report"], "either a run folder or --latest"),
        (["compare", "{tmp}", "{tmp}"], "not an authbench run"),
        (["compare-configs", "{run}", "session-redis", "nope"], "unknown configuration 'nope'"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_1(
    args: list[str],
    message: str,
    tmp_path: Path,
    latency_run: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.format(tmp=tmp_path, run=latency_run) for a in args]
    assert main(argv) == 1
    assert message in one_error_line(capsys)


def test_different_dependencies_need_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_run(tmp_path, ["session-redis"], name="a")
    b = make_run(tmp_path, ["session-redis"], name="b", dependency_hash="f" * 16)
    assert main(["compare", str(a), str(b)]) == 1
    assert "pass --force" in one_error_line(capsys)
    assert main(["compare", str(a), str(b), "--force"]) == 0
    out = capsys.readouterr().out
    assert "dependency sets differ" in out and "session-redis · browse" in out


def test_compare_configs_prints_a_table(
    latency_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare-configs", str(latency_run), "session-redis", "jwt-hs256"]) == 0
    out = capsys.readouterr().out
    assert "session-redis → jwt-hs256 · browse" in out and "p99 ms" in out


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["bogus"], ["compare", "only-one"], []):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert one_error_line(capsys).startswith("python -m analysis")


def test_module_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "analysis", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "not an authbench run" in done.stderr
