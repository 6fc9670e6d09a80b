"""`python -m analysis report|compare|compare-configs`: the report and run comparison.

User mistakes (a missing folder, a folder that is not a run, an unknown configuration,
different dependency sets without --force) end with one line on stderr and exit 1;
argparse errors exit 2 with one line. Never a traceback for those.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from analysis.load import RunError, load_manifest

RESULTS = Path(__file__).resolve().parent.parent / "results"
PROG = "python -m analysis"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of `python -m analysis`."""
    p = _Parser(prog=PROG, description="Charts, report and comparison of authbench runs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    report = sub.add_parser("report", help="draw the charts and write report.html / report.md")
    report.add_argument("run", nargs="?", type=Path, help="a results/<run-id> folder")
    report.add_argument("--latest", action="store_true", help="the newest run under --results")
    report.add_argument("--results", type=Path, default=RESULTS, help="folder of runs")
    compare = sub.add_parser("compare", help="two runs side by side (B against A)")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    compare.add_argument(
        "--force", action="store_true", help="compare even if the dependency sets differ"
    )
    configs = sub.add_parser("compare-configs", help="two configurations of one run (B vs A)")
    configs.add_argument("run", type=Path)
    configs.add_argument("a")
    configs.add_argument("b")
    return p


def latest_run(results: Path) -> Path:
    """Return the newest run folder under `results` (by run id, which sorts by time).

    Raises RunError if `results` holds no run.
    """
    if not results.is_dir():
        raise RunError(f"{results}: no such folder")
    runs = sorted(
        (d for d in results.iterdir() if d.is_dir() and (d / "manifest.json").is_file()),
        key=lambda d: d.name,
    )
    if not runs:
        raise RunError(f"{results}: no run folders (run `python -m loadtests run` first)")
    return runs[-1]


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    if args.latest == (args.run is not None):
        raise RunError("report: give either a run folder or --latest")
    run = latest_run(args.results) if args.latest else args.run
    html, _md = write_report(run)
    print(html)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from analysis.compare import compare_runs, format_comparison, offered_rate_notes, unmatched

    table = compare_runs(args.a, args.b, force=args.force)
    notes = offered_rate_notes(args.a, args.b) + unmatched(args.a, args.b)
    ha = load_manifest(args.a).get("dependency_hash")
    hb = load_manifest(args.b).get("dependency_hash")
    if ha != hb:
        notes.append(f"dependency sets differ ({ha} vs {hb}); compared because of --force")
    print(format_comparison(table, str(args.a), str(args.b), notes))
    return 0


def _compare_configs(args: argparse.Namespace) -> int:
    from analysis.compare import compare_configs, format_comparison

    table = compare_configs(args.run, args.a, args.b)
    print(format_comparison(table, f"{args.a} in {args.run}", f"{args.b} in {args.run}", []))
    return 0


COMMANDS = {"report": _report, "compare": _compare, "compare-configs": _compare_configs}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 user error, 2 usage)."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RunError as exc:
        print(f"{PROG} {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
