"""A tiny document model rendered twice: Markdown (figures as files beside it) and self-contained HTML.

The report is built once as a list of blocks, so the two renderings always say the same thing.
Rendering is a pure function of the blocks (no clock, no randomness): the same runs give the same bytes.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    kind: str = "text"  # text | note | warning | source


@dataclass
class Bullets:
    items: list[str]
    kind: str = "text"


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str | None = None
    align_right_from: int = 1  # numeric-looking columns from this index on are right-aligned in HTML


@dataclass
class Figure:
    path: Path       # the PNG on disk
    caption: str


@dataclass
class Code:
    text: str
    summary: str | None = None  # HTML: collapsible <details> with this summary


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(b for b in blocks if b is not None)


_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    """Escape, then turn `code` spans into <code> (the only inline markup used in the report)."""
    parts = _CODE.split(text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _md_cell(value: object) -> str:
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return text.replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


PREFIX = {"note": "Note: ", "warning": "⚠ ", "source": ""}


def to_markdown(doc: Document, out_dir: Path) -> str:
    lines = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            lines += [f"{'#' * b.level} {b.text}", ""]
        elif isinstance(b, Para):
            text = PREFIX.get(b.kind, "") + b.text
            lines += [f"> {text}" if b.kind in ("note", "warning", "source") else text, ""]
        elif isinstance(b, Bullets):
            lines += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            frame = b.frame.map(_md_cell)
            frame.columns = [_md_cell(c) for c in frame.columns]
            if b.caption:
                lines += [f"*{b.caption}*", ""]
            lines += [frame.to_markdown(index=False, disable_numparse=True), ""]
        elif isinstance(b, Figure):
            rel = b.path.relative_to(out_dir).as_posix()
            lines += [f"![{b.caption}]({rel})", "", f"*{b.caption}*", ""]
        elif isinstance(b, Code):
            if b.summary:
                lines += [f"{b.summary}:", ""]
            lines += ["```", b.text.rstrip("\n"), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 1320px; padding: 0 1rem; color: #1b1b1b; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .2rem; margin-top: 2.2rem; }
.tablewrap { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .55rem; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3rem; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-style: italic; font-size: .9rem; }
.note { background: #eef5ff; border-left: 4px solid #4a7fd4; padding: .4rem .8rem; }
.warning { background: #fff4e5; border-left: 4px solid #e08a00; padding: .4rem .8rem; }
.source { background: #f3f3f3; border-left: 4px solid #777; padding: .4rem .8rem; font-size: .9rem; }
ul.note, ul.warning { padding-left: 2.2rem; }
pre { background: #f6f6f6; padding: .6rem; overflow-x: auto; font-size: .85rem; }
code { background: #f2f2f2; padding: 0 .2rem; }
nav ul { columns: 2; }
"""

_NUMERIC = re.compile(r"^[\s\-+−]*[\d.,]+(\s*±\s*[\d.,]+)?\s*%?$|^n/a$")


def to_html(doc: Document) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(doc.title)}</h1>"]
    toc = [b for b in doc.blocks if isinstance(b, Heading) and b.level == 2]
    if toc:
        out.append("<nav><ul>" + "".join(f'<li><a href="#{_slug(h.text)}">{_inline_html(h.text)}</a></li>'
                                         for h in toc) + "</ul></nav>")
    seen: dict[str, int] = {}
    for b in doc.blocks:
        if isinstance(b, Heading):
            slug = _slug(b.text)
            seen[slug] = seen.get(slug, 0) + 1
            anchor = slug if seen[slug] == 1 else f"{slug}-{seen[slug]}"
            out.append(f'<h{b.level} id="{anchor}">{_inline_html(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            cls = f' class="{b.kind}"' if b.kind != "text" else ""
            out.append(f"<p{cls}>{_inline_html(PREFIX.get(b.kind, '') + b.text)}</p>")
        elif isinstance(b, Bullets):
            cls = f' class="{b.kind}"' if b.kind != "text" else ""
            out.append(f"<ul{cls}>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            out.append(_html_table(b))
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                       f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>")
        elif isinstance(b, Code):
            pre = f"<pre>{html.escape(b.text.rstrip(chr(10)))}</pre>"
            out.append(f"<details><summary>{_inline_html(b.summary)}</summary>{pre}</details>" if b.summary
                       else pre)
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def _html_table(t: Table) -> str:
    rows = ['<div class="tablewrap"><table>']
    if t.caption:
        rows.append(f"<caption>{_inline_html(t.caption)}</caption>")
    rows.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in t.frame.columns) + "</tr></thead>")
    rows.append("<tbody>")
    for values in t.frame.itertuples(index=False):
        cells = []
        for i, v in enumerate(values):
            text = _md_cell(v).replace("\\|", "|")
            cls = ' class="num"' if i >= t.align_right_from and _NUMERIC.match(text) else ""
            cells.append(f"<td{cls}>{_inline_html(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</tbody></table></div>")
    return "\n".join(rows)
