"""Debian's Chromium (installed by .ci/run), opened through Playwright without downloading a browser: the page
benchmark times the report's page in it, and the page tests (tests/browser.py) drive it."""

from __future__ import annotations

import contextlib
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def open_in_playwright(page: Path, fragment: str = "", width: int = 1200, height: int = 900):
    """(tab, problems): `page` open in Debian's chromium through Playwright (nothing downloaded), in a window of
    width x height CSS pixels; problems collects console errors and warnings, page errors and dialogs (an alert()
    from a file name would be one)."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415  (a dev dependency)

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            problems: list[str] = []
            tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: problems.append(str(e)))
            tab.on("dialog", lambda d: (problems.append("dialog " + d.message), d.dismiss()))
            tab.goto(page.resolve().as_uri() + fragment)
            yield tab, problems
        finally:
            browser.close()
