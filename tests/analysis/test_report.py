"""The report: one self-contained HTML file and a Markdown twin, written for newcomers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.document import Block, Cell, Figure, Heading, Paragraph, Table, to_html, to_markdown
from analysis.report import write_report
from tests.analysis.conftest import GENERATOR_BOUND, UNVERIFIED, UNVERIFIED_DETAIL


@pytest.fixture(scope="module")
def report(latency_run: Path) -> tuple[str, str]:
    html_path, md_path = write_report(latency_run)
    assert (html_path, md_path) == (latency_run / "report.html", latency_run / "report.md")
    return html_path.read_text(), md_path.read_text()


def test_html_is_self_contained(report: tuple[str, str]) -> None:
    html, _ = report
    assert html.count('src="data:image/png;base64,') >= 7
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html


def test_properties_table_is_derived_per_configuration(report: tuple[str, str]) -> None:
    html, md = report
    assert '<table class="properties">' in html
    for title in (
        "Immediate revocation",
        "Refresh-token reuse detection",
        "State on the server",
        "Several instances without a shared store",
    ):
        assert title in html
    # Unmeasured configurations still get their properties row.
    row = next(line for line in md.splitlines() if line.startswith(f"| {UNVERIFIED} |"))
    assert "revoked token ids" in row and "not measured" in row
    stateless = next(line for line in md.splitlines() if line.startswith("| jwt-hs256-stateless |"))
    assert "refresh tokens cannot be revoked either" in stateless
    assert 'class="good"' in html and 'class="bad"' in html


def test_method_flags_and_failures_are_reported(report: tuple[str, str]) -> None:
    html, md = report
    assert "browse: 200 req/s, login: 200 req/s" in md  # offered rate per scenario
    assert "Python" in md and "Dependency hash" in md and "Complete" in md
    assert f"{UNVERIFIED} (repeat 1): unverified — {UNVERIFIED_DETAIL}" in md
    assert f"† Generator-bound (load generator over 80% CPU): {GENERATOR_BOUND}/browse" in md
    assert "Fell behind the offered rate" in md
    assert "`python -m loadtests run --mode max`" in md  # the skipped chart says why
    assert "<code>python -m loadtests run --mode max</code>" in html


def test_markdown_links_the_chart_files(latency_run: Path, report: tuple[str, str]) -> None:
    _, md = report
    links = re.findall(r"\]\((charts/[^)]+)\)", md)
    assert "charts/latency-percentiles.png" in links and "charts/tokens-size.svg" in links
    assert all((latency_run / link).is_file() for link in links)


def test_every_chart_says_how_to_read_it(report: tuple[str, str]) -> None:
    html, _ = report
    for figure in re.findall(r"<figure>.*?</figure>", html, flags=re.S):
        assert figure.count("<p>") == 2


def test_max_run_report(max_run: Path) -> None:
    html_path, _ = write_report(max_run)
    html = html_path.read_text()
    assert "Capacity req/s" in html and "Latency against load" in html


def test_document_rendering_escapes_text(tmp_path: Path) -> None:
    png = tmp_path / "charts" / "x.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    blocks: list[Block] = [
        Heading("<h>"),
        Paragraph("a & b", "warning"),
        Table(["k", "v"], [["x|y", Cell("1", "good")]]),
        Figure("t", png, [png], ("line one", "line two")),
    ]
    html = to_html("T", blocks)
    assert "&lt;h&gt;" in html and "a &amp; b" in html and '<td class="num good">1</td>' in html
    md = to_markdown("T", blocks, tmp_path)
    assert "x\\|y" in md and "![t](charts/x.png)" in md
