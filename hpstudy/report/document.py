"""A tiny document model (sections of paragraphs, notes, tables and figures) rendered to HTML and Markdown.

The report builders produce one ``Section`` tree; ``render_html`` and ``render_markdown`` turn the same
tree into a self-contained HTML page (figures as base64 PNG data URIs) and a Markdown file linking the
PNGs, so the two never disagree.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Para", "Note", "Table", "Figure", "Section", "Block", "slug", "format_cell"]


@dataclass
class Para:
    """A paragraph; text between backticks is shown as code."""

    text: str


@dataclass
class Note:
    """A sentence saying an artefact is missing and how to produce it (shown highlighted)."""

    text: str


@dataclass
class Table:
    """A table; floats are shown with 4 significant digits, missing values as blanks."""

    frame: pd.DataFrame
    caption: str | None = None


@dataclass
class Figure:
    """A PNG file inside the report's output folder."""

    path: Path
    caption: str


Block = Para | Note | Table | Figure


@dataclass
class Section:
    """A titled section with its blocks and sub-sections; ``anchor`` is its HTML id."""

    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        """Append blocks; returns the section for chaining."""
        self.blocks.extend(blocks)
        return self

    def walk(self) -> list[Section]:
        """This section and all its descendants, in document order."""
        return [self, *(s for child in self.children for s in child.walk())]


def slug(text: str) -> str:
    """A lowercase identifier made of letters, digits and hyphens (for ids and file names)."""
    value = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return value or "section"


def format_cell(value: Any) -> str:
    """How one table cell is shown: 4 significant digits for floats, blank for missing values."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.0f}" if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_cell(v) for v in value)
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _inline_html(text: str) -> str:
    """Escape text, then show `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _table_html(table: Table) -> str:
    frame = table.frame
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False, name=None))
    caption = f'<p class="caption">{_inline_html(table.caption)}</p>' if table.caption else ""
    return f'<div class="table-wrap">{caption}<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _figure_html(figure: Figure) -> str:
    if not figure.path.is_file():
        return f'<p class="note">Figure missing: {html.escape(str(figure.path))}</p>'
    data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    alt = html.escape(figure.caption, quote=True)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{_inline_html(figure.caption)}</figcaption></figure>")


def block_html(block: Block) -> str:
    """One block as HTML."""
    if isinstance(block, Para):
        return f"<p>{_inline_html(block.text)}</p>"
    if isinstance(block, Note):
        return f'<p class="note">{_inline_html(block.text)}</p>'
    if isinstance(block, Table):
        return _table_html(block)
    return _figure_html(block)


def section_html(section: Section, depth: int = 2) -> str:
    """A section and its children as nested ``<section>`` elements (h2 for top-level sections)."""
    level = min(depth, 6)
    parts = [f'<section id="{html.escape(section.anchor, quote=True)}">',
             f"<h{level}>{html.escape(section.title)}</h{level}>"]
    parts += [block_html(block) for block in section.blocks]
    parts += [section_html(child, depth + 1) for child in section.children]
    parts.append("</section>")
    return "\n".join(parts)


def toc_html(sections: list[Section], depth: int = 0, max_depth: int = 2) -> str:
    """Nested table of contents (top-level sections and their children)."""
    items = []
    for section in sections:
        inner = toc_html(section.children, depth + 1, max_depth) if depth + 1 < max_depth and section.children else ""
        items.append(f'<li><a href="#{html.escape(section.anchor, quote=True)}">{html.escape(section.title)}</a>'
                     f"{inner}</li>")
    return f"<ul>{''.join(items)}</ul>"


def _md_escape_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_markdown(table: Table) -> str:
    frame = table.frame
    lines = [f"*{table.caption}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_escape_cell(str(c)) for c in frame.columns) + " |")
    lines.append("|" + "---|" * len(frame.columns))
    for row in frame.itertuples(index=False, name=None):
        lines.append("| " + " | ".join(_md_escape_cell(format_cell(v)) for v in row) + " |")
    return "\n".join(lines)


def block_markdown(block: Block, out_dir: Path) -> str:
    """One block as Markdown; figures are linked relative to ``out_dir``."""
    if isinstance(block, Para):
        return block.text
    if isinstance(block, Note):
        return f"> **Note:** {block.text}"
    if isinstance(block, Table):
        return _table_markdown(block)
    try:
        target = block.path.relative_to(out_dir).as_posix()
    except ValueError:
        target = block.path.as_posix()
    return f"![{block.caption}]({target})\n\n*{block.caption}*"


def section_markdown(section: Section, out_dir: Path, depth: int = 2) -> str:
    """A section and its children as Markdown (``##`` for top-level sections)."""
    parts = [f'<a id="{section.anchor}"></a>', f"{'#' * min(depth, 6)} {section.title}"]
    parts += [block_markdown(block, out_dir) for block in section.blocks]
    parts += [section_markdown(child, out_dir, depth + 1) for child in section.children]
    return "\n\n".join(parts)
