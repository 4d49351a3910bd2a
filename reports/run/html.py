"""The report page, rendered from a context of plain data (never markup) into one self-contained HTML file.

The markup is in Jinja2 templates (templates/ beside this file: `page.html`, one `section_<anchor>.html` per section,
`macros.html`), rendered with autoescape on, so that every value from the data (file names, class names, error
messages) is escaped as text or attribute unless a template says otherwise. The two other places a value can land
have their own filters from reports/escape.py: `url` for src/href (relative paths only, percent-encoded) and
`script_json` for the inline data scripts. Styles and scripts are inline; nothing is fetched from the network.
A new section: one more partial, one more entry in NAV, and a builder of its context in page.py when it shows
data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from markupsafe import Markup

from reports.run.browser import SCRIPT as BROWSER_SCRIPT
from reports.run.explorer import SCRIPT as EXPLORER_SCRIPT
from reports.templating import make_environment

HERE = Path(__file__).parent

# (anchor, title): the fixed navigation, and the sections in page order (each is templates/section_<anchor>.html):
# the answer first, then from a class to a channel to an image; what the run was, at the end.
NAV = (
    ("answer", "answer"),
    ("browser", "channels"),
    ("map", "map and images"),
    ("mistakes", "mistakes"),
    ("classification", "classification"),
    ("channels", "channel tables"),
    ("quality", "data quality"),
    ("checks", "dataset checks"),
    ("check", "check"),
    ("data", "load the data"),
    ("run", "run"),
)
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")  # explorer.js's class colours, in order


def _num(value: Any, fmt: str | None = ".3f") -> str:
    """A number in `fmt` (None: as text); a missing value or NaN as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Markup("&ndash;")
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return format(value, fmt)
    return str(value)


def _pick(row: Mapping[str, Any], keys: Iterable[str]) -> tuple:
    return tuple(row[k] for k in keys)


_ENV = make_environment(HERE / "templates", num=_num, pick=_pick)


def _asset(path: Path) -> Markup:
    """Our own style sheet or script, from the repository (never data): inlined as it is."""
    return Markup(path.read_text(encoding="utf-8"))


def render_page(ctx: Mapping[str, Any]) -> str:
    """The whole page as a string."""
    assets = {
        "css": _asset(HERE / "page.css"),
        "sections": _asset(HERE / "sections.js"),
        "browser": _asset(BROWSER_SCRIPT),
        "explorer": _asset(EXPLORER_SCRIPT),
        "cards": _asset(HERE / "cards.js"),
    }
    return _ENV.get_template("page.html").render(**ctx, nav=NAV, colours=COLOURS, assets=assets) + "\n"
