"""Escaping for each place a value from the data lands in a page: text and attributes, URLs, inline JSON.

Both pages (the dataset report and the one-image walkthrough) use these, so that escaping is written once. The
report's Jinja2 templates escape text and attributes by autoescape (markupsafe: the same five characters as `text`,
as numeric references) and take `url` and `script_json` as filters (`jinja_filters`).
"""

from __future__ import annotations

import html
import json
import os
import re
from typing import Any, Callable
from urllib.parse import quote

from markupsafe import Markup

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def text(value: Any) -> str:
    """Text or a double-quoted attribute value: & < > " ' escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str) -> str:
    """A relative path for src/href: no scheme (javascript:, http:, data:), no absolute path; percent-encoded."""
    if _SCHEME.match(path) or path.startswith(("/", "\\")):
        raise ValueError(f"only relative paths may be referenced by the page, got {path!r}")
    return text(quote(os.fsencode(path), safe="/"))  # the real bytes of a folder name that is not UTF-8


def script_json(obj: Any) -> str:
    """JSON for inside <script>: no character sequence in it can close the element or open a comment."""
    blob = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    for ch in "<>&'":  # no </script>, <!--, entity or quote can appear, whatever the strings hold
        blob = blob.replace(ch, f"\\u{ord(ch):04x}")
    return blob


def jinja_filters() -> dict[str, Callable[[Any], Markup]]:
    """`url` and `script_json` for templates: their output is already escaped for its place, so it is marked safe
    (autoescape would otherwise escape it again, and turn the JSON's quotes into entities)."""
    return {"url": lambda path: Markup(url(path)), "script_json": lambda obj: Markup(script_json(obj))}
