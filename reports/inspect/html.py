"""The inspect page: a `Page` collects sections of figures, tables and notes (and the files they need), and
`render_page` turns it into one self-contained HTML document.

Everything that comes from data (file names, class names, numbers) is escaped where it lands; figures are
referenced by plain relative file names that the page itself carries, so the page opens from disk with no server
and no network, and a Content-Security-Policy forbids scripts outright.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from reports.escape import text as _e
from reports.escape import url as _url

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; background: #fff;
       max-width: 1180px; margin: 0 auto; padding: 0 20px 60px; }
h1 { font-size: 26px; margin: 24px 0 4px; word-break: break-all; }
h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin-top: 22px; }
.subtitle { color: #555; margin: 0 0 16px; }
.banner { background: #fff3cd; border: 1px solid #e0b100; padding: 10px 14px; font-weight: 600; margin: 12px 0; }
.note { background: #f3f6fa; border-left: 4px solid #7a9cc6; padding: 8px 12px; margin: 10px 0; }
figure { margin: 14px 0; display: inline-block; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; image-rendering: auto; }
figure.small img { width: 300px; image-rendering: pixelated; }
figcaption { color: #444; font-size: 13.5px; max-width: 1100px; margin-top: 4px; }
table { border-collapse: collapse; margin: 10px 0; font-size: 13.5px; }
caption { text-align: left; color: #444; padding-bottom: 4px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
nav a { margin-right: 14px; }
code { background: #f4f4f4; padding: 0 3px; }
"""


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Page:
    """The page's context: facts, sections of blocks, and the files (name -> bytes) that the blocks reference."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self.banner: str | None = None
        self.facts: list[tuple[str, str]] = []
        self.sections: list[Section] = []
        self.files: dict[str, bytes] = {}

    def section(self, anchor: str, title: str) -> None:
        if not _FILE_NAME.match(anchor):
            raise ValueError(f"section anchor {anchor!r}: letters, digits, '.', '_' and '-' only")
        self.sections.append(Section(anchor, title))

    def _add(self, kind: str, **values: Any) -> None:
        if not self.sections:
            raise ValueError("add a section before its content")
        self.sections[-1].blocks.append((kind, values))

    def attach(self, name: str, data: bytes) -> str:
        """A file the page carries beside index.html; returns its name."""
        if not _FILE_NAME.match(name) or name == "index.html":
            raise ValueError(f"file name {name!r}: letters, digits, '.', '_' and '-' only (not index.html)")
        if name in self.files:
            raise ValueError(f"file name {name!r} is used twice on the page")
        self.files[name] = data
        return name

    def figure(self, name: str, png: bytes, caption: str, alt: str | None = None, small: bool = False) -> None:
        self._add("figure", src=self.attach(name, png), caption=caption, alt=alt or caption, small=small)

    def table(self, caption: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self._add("table", caption=caption, header=list(header), rows=[list(r) for r in rows])

    def note(self, text: str) -> None:
        self._add("note", text=text)

    def text(self, text: str) -> None:
        self._add("text", text=text)

    def heading(self, text: str) -> None:
        self._add("heading", text=text)

    def link(self, text: str, name: str) -> None:
        """A paragraph linking to a file the page carries."""
        if name not in self.files:
            raise ValueError(f"link to {name!r}, which the page does not carry")
        self._add("link", text=text, href=name)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{_e(f"{value:.6g}")}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{_e(value)}</td>"


def _block(kind: str, b: dict[str, Any]) -> str:
    if kind == "figure":
        cls = ' class="small"' if b["small"] else ""
        return (f'<figure{cls}><img src="{_url(b["src"])}" alt="{_e(b["alt"])}" loading="lazy">'
                f'<figcaption>{_e(b["caption"])}</figcaption></figure>')
    if kind == "table":
        head = "".join(f"<th>{_e(h)}</th>" for h in b["header"])
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in b["rows"])
        return f'<table><caption>{_e(b["caption"])}</caption><tr>{head}</tr>{body}</table>'
    if kind == "note":
        return f'<p class="note">{_e(b["text"])}</p>'
    if kind == "text":
        return f"<p>{_e(b['text'])}</p>"
    if kind == "heading":
        return f"<h3>{_e(b['text'])}</h3>"
    if kind == "link":
        return f'<p><a href="{_url(b["href"])}">{_e(b["text"])}</a></p>'
    raise ValueError(f"unknown block kind {kind!r}")


def render_page(page: Page) -> str:
    """The whole HTML document, self-contained apart from the files the page carries."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(page.title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_e(page.title)}</h1>"]
    if page.subtitle:
        parts.append(f'<p class="subtitle">{_e(page.subtitle)}</p>')
    if page.banner:
        parts.append(f'<p class="banner">{_e(page.banner)}</p>')
    if page.facts:
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in page.facts)
        parts.append(f"<table>{rows}</table>")
    parts.append("<nav>" + "".join(f'<a href="#{_e(s.anchor)}">{_e(s.title)}</a>' for s in page.sections) + "</nav>")
    for s in page.sections:
        parts.append(f'<section id="{_e(s.anchor)}"><h2>{_e(s.title)}</h2>')
        parts.extend(_block(kind, b) for kind, b in s.blocks)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
