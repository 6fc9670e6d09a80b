"""A report as a list of plain blocks, and its two renderings: one HTML file and Markdown.

The HTML is self-contained: styles inline in <style>, images embedded as base64 PNG, no
script, no external reference, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    """A section title (level 1–3)."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Running text; `kind` "note" or "warning" is shown as a callout."""

    text: str
    kind: str = ""


@dataclass(frozen=True)
class Bullets:
    """A bulleted list."""

    items: Sequence[str]


@dataclass(frozen=True)
class Cell:
    """One table cell; `css` colours it in HTML (good, partial, bad, flag)."""

    text: str
    css: str = ""


@dataclass(frozen=True)
class Table:
    """A table with a header row; cells are strings or `Cell`s."""

    header: Sequence[str]
    rows: Sequence[Sequence[str | Cell]]
    css: str = ""
    numeric_from: int = 1
    """Columns from this index on are right-aligned (numbers) …"""
    numeric_to: int | None = None
    """… up to this index (exclusive); None = to the last column."""

    def numeric(self, column: int) -> bool:
        """Return whether `column` holds numbers (right-aligned)."""
        end = len(self.header) if self.numeric_to is None else self.numeric_to
        return self.numeric_from <= column < end


@dataclass(frozen=True)
class Figure:
    """A chart: PNG to embed, files to link, and the lines that say how to read it."""

    title: str
    png: Path
    links: Sequence[Path]
    caption: Sequence[str] = field(default_factory=tuple)


Block = Heading | Paragraph | Bullets | Table | Figure

CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;
max-width:1180px;margin:2em auto;padding:0 1.2em}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 7px;vertical-align:top}
th{background:#f4f4f4;text-align:left}td.num{text-align:right;white-space:nowrap}
td.good{background:#e6f4ea}td.partial{background:#fff4d6}td.bad{background:#fde7e4}
td.flag{color:#a03000;font-weight:600}
table.facts td:first-child{font-weight:600;white-space:nowrap}
.note{background:#f3f6fb;border-left:4px solid #6b8fc7;padding:.5em .9em}
.warning{background:#fff4e5;border-left:4px solid #e08a00;padding:.5em .9em}
figure{margin:1.5em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#444;font-size:14px}figcaption p{margin:.2em 0}
code{background:#f4f4f4;padding:0 3px}
"""


def _inline(text: str) -> str:
    """Escape `text`, turning `code` spans into <code> (the only markup the blocks use)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _cell_html(cell: str | Cell, numeric: bool) -> str:
    text, css = (cell.text, cell.css) if isinstance(cell, Cell) else (cell, "")
    classes = " ".join(c for c in ("num" if numeric else "", css) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{_inline(text)}</td>"


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in t.header)
    body = "".join(
        "<tr>" + "".join(_cell_html(c, t.numeric(i)) for i, c in enumerate(row)) + "</tr>"
        for row in t.rows
    )
    css = f' class="{t.css}"' if t.css else ""
    return f"<table{css}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(f: Figure) -> str:
    data = base64.b64encode(f.png.read_bytes()).decode("ascii")
    caption = "".join(f"<p>{_inline(line)}</p>" for line in f.caption)
    return (
        f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def to_html(title: str, blocks: Sequence[Block]) -> str:
    """Return one self-contained HTML page of `blocks` (no external resources)."""
    out = [f"<h1>{_inline(title)}</h1>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            css = f' class="{b.kind}"' if b.kind else ""
            out.append(f"<p{css}>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            out.append(_table_html(b))
        else:
            out.append(_figure_html(b))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(out)
        + "\n</body></html>\n"
    )


def _md_cell(cell: str | Cell) -> str:
    text = cell.text if isinstance(cell, Cell) else cell
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, blocks: Sequence[Block], base: Path) -> str:
    """Return `blocks` as Markdown; figures link their files relative to `base`."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Paragraph):
            out += [("> " if b.kind else "") + b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {i}" for i in b.items] + [""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
            out.append(
                "|"
                + "|".join("---:" if b.numeric(i) else "---" for i in range(len(b.header)))
                + "|"
            )
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        else:
            png = b.png.relative_to(base).as_posix()
            links = " · ".join(
                f"[{p.suffix[1:].upper()}]({p.relative_to(base).as_posix()})" for p in b.links
            )
            out += [f"![{b.title}]({png})", "", *[f"*{line}*  " for line in b.caption]]
            out += [f"Files: {links}", ""]
    return "\n".join(out).rstrip() + "\n"
