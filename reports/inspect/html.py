"""The inspect page: a `Page` collects sections of figures, tables and notes (and the files they need), and
`render_page` turns it into one self-contained HTML document (templates/page.html, Jinja2 with autoescape).

Everything that comes from data (file names, class names, numbers) is escaped where it lands (autoescape, and the
`url` filter of reports/escape.py); figures are referenced by plain relative file names that the page itself
carries, so the page opens from disk with no server and no network, and a Content-Security-Policy forbids scripts
outright.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from markupsafe import Markup

from reports.templating import make_environment

_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HERE = Path(__file__).parent
_CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_ENV = make_environment(HERE / "templates")


@dataclass
class Section:
    anchor: str
    title: str
    number: int  # its step number: its place on the page, counted from 1, never typed
    blocks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Page:
    """The page's context: facts, sections of blocks, and the files (name -> bytes) that the blocks reference.

    Sections are shown in the order they are added and numbered by it (1, 2, 3...): the page's order is the order
    of the calls that build it. The facts (what produced the page) are shown last.
    """

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self.banner: str | list[tuple[str, bool]] | None = None  # text, or reports/banners.py's parts
        self.facts: list[tuple[str, str]] = []
        self.sections: list[Section] = []
        self.files: dict[str, bytes] = {}

    def section(self, anchor: str, title: str) -> None:
        if not _FILE_NAME.match(anchor):
            raise ValueError(f"section anchor {anchor!r}: letters, digits, '.', '_' and '-' only")
        if any(s.anchor == anchor for s in self.sections):
            raise ValueError(f"section anchor {anchor!r} is used twice on the page")
        self.sections.append(Section(anchor, title, len(self.sections) + 1))

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


def render_page(page: Page) -> str:
    """The whole HTML document, self-contained apart from the files the page carries."""
    css = Markup((HERE / "page.css").read_text(encoding="utf-8"))  # ours, from the repository: never data
    return _ENV.get_template("page.html").render(page=page, csp=_CSP, css=css) + "\n"
