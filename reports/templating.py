"""The Jinja2 environment of both pages: autoescape on, an undefined name an error, the escaping filters of
reports/escape.py, and templates whose line breaks are layout of the source only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import jinja2

from reports import escape


class _Loader(jinja2.FileSystemLoader):
    """Templates are written one element a line for reading; the pages have no whitespace between elements (scripts
    and tests address neighbours), so a line break and the indentation after it are dropped from the source: write
    a sentence on one line."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        return re.sub(r"\n[ \t]*", "", source), filename, uptodate


def make_environment(folder: Path, **filters: Callable[..., Any]) -> jinja2.Environment:
    env = jinja2.Environment(loader=_Loader(folder), autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(escape.jinja_filters())
    env.filters.update(filters)
    return env
