"""The report page: a self-contained HTML file (inline CSS, figures as data URIs) and its Markdown twin.

The page carries a small inline script that, once the window has loaded, checks every image decoded
(``naturalWidth > 0``) and every ``<section>`` has content beyond its heading, and writes the result as
JSON into the hidden ``<pre id="hpstudy-check">``. A headless browser dumping the DOM can read it; for a
reader it is invisible and harmless.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from hpstudy.report.document import Block, Section, block_html, block_markdown, section_html, section_markdown, toc_html

__all__ = ["CHECK_ELEMENT_ID", "render_html", "render_markdown"]

CHECK_ELEMENT_ID = "hpstudy-check"

_CSS = """
:root { --ink: #1f2933; --muted: #52606d; --line: #d9e2ec; --accent: #2c6eaf; --warn-bg: #fff8e1; --warn: #b7791f; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #f5f7fa;
       font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; min-height: 100vh; }
h1 { font-size: 1.9em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.5em; margin-top: 2em; padding-bottom: 0.2em; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.2em; margin-top: 1.6em; color: var(--accent); }
h4 { font-size: 1.05em; margin-top: 1.3em; }
.meta { color: var(--muted); margin-top: 0; }
nav.toc { background: #f0f4f8; border: 1px solid var(--line); border-radius: 6px; padding: 10px 18px; margin: 18px 0; }
nav.toc h2 { font-size: 1.05em; margin: 0.3em 0; border: 0; }
nav.toc ul { margin: 0.2em 0; padding-left: 1.2em; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code { background: #f0f4f8; border-radius: 3px; padding: 0 4px; font-size: 0.92em; }
.note { background: var(--warn-bg); border-left: 4px solid var(--warn); padding: 8px 12px; border-radius: 3px; }
.table-wrap { display: inline-block; vertical-align: top; max-width: 100%; overflow-x: auto;
              margin: 10px 28px 10px 0; }
.caption { color: var(--muted); font-style: italic; font-size: 0.88em; margin: 0 0 4px; }
table { border-collapse: collapse; font-size: 0.88em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #e8eef5; }
tbody tr:nth-child(even) { background: #f8fafc; }
figure { margin: 16px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 0.9em; margin-top: 4px; }
#hpstudy-check { display: none; }
"""

_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); })
                     .map(function (img) { return img.alt || "image"; });
  var sections = Array.prototype.slice.call(document.querySelectorAll("section"));
  var empty = sections.filter(function (section) {
    var copy = section.cloneNode(true);
    var heading = copy.querySelector(":scope > h1, :scope > h2, :scope > h3, :scope > h4, :scope > h5, :scope > h6");
    if (heading) { copy.removeChild(heading); }
    return copy.textContent.trim() === "" && !copy.querySelector("img, table");
  }).map(function (section) { return section.id; });
  var result = {images: images.length, broken_images: broken, sections: sections.length,
                empty_sections: empty, ok: broken.length === 0 && empty.length === 0};
  document.getElementById("__CHECK_ID__").textContent = JSON.stringify(result);
});
""".replace("__CHECK_ID__", CHECK_ELEMENT_ID)


def render_html(*, title: str, generated: str, intro: Sequence[Block], sections: Sequence[Section]) -> str:
    """The whole page: title, timestamp, introduction, table of contents, sections, check script."""
    body = "\n".join(section_html(section) for section in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{html.escape(title)}</h1>
<p class="meta">Generated {html.escape(generated)} by hpstudy</p>
{"".join(block_html(block) for block in intro)}
<nav class="toc"><h2>Contents</h2>{toc_html(list(sections))}</nav>
{body}
<pre id="{CHECK_ELEMENT_ID}" hidden></pre>
</main>
<script>{_CHECK_SCRIPT}</script>
</body>
</html>
"""


def _toc_markdown(sections: Sequence[Section]) -> str:
    lines = []
    for section in sections:
        lines.append(f"- [{section.title}](#{section.anchor})")
        lines += [f"  - [{child.title}](#{child.anchor})" for child in section.children]
    return "\n".join(lines)


def render_markdown(*, title: str, generated: str, intro: Sequence[Block], sections: Sequence[Section],
                    out_dir: Path) -> str:
    """The Markdown report: same content, figures linked as PNG files relative to ``out_dir``."""
    parts = [f"# {title}", f"*Generated {generated} by hpstudy*"]
    parts += [block_markdown(block, out_dir) for block in intro]
    parts += ["## Contents", _toc_markdown(sections)]
    parts += [section_markdown(section, out_dir) for section in sections]
    return "\n\n".join(parts) + "\n"
