"""A real headless Chromium for the page tests (Debian's, installed by .ci/run; opened through Playwright by
benchmarks/browser.py, which the page benchmark uses too), and an HTML parser that collects what a browser would see:
tags with their attributes, text, and script bodies."""

from __future__ import annotations

import json
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.browser import CHROMIUM, open_in_playwright  # noqa: F401  (the page tests' one way to open a page)

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing (.ci/run installs chromium)"
)


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)


def parse(path: Path) -> tuple[str, Collector]:
    text = path.read_text(encoding="utf-8")
    c = Collector()
    c.feed(text)
    return text, c


def render_in_chromium(page: Path, tmp_path: Path) -> tuple[list[str], np.ndarray]:
    """Console lines and the screenshot of `page`, with alert() turned into a console error: if anything on the
    page runs script it was not meant to (a hostile name's onerror, say), it shows in the console."""
    probe = page.with_name("probe.html")
    hook = "<script>window.alert=function(x){console.error('ALERT '+x)};</script>"
    probe.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + hook, 1), encoding="utf-8")
    shot = tmp_path / "shot.png"
    try:
        result = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
                "--hide-scrollbars",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=1200,1600",
                f"--screenshot={shot}",
                probe.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        probe.unlink()
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return console, np.asarray(Image.open(shot).convert("L"), dtype=np.float32)


def page_data(path: Path, name: str) -> dict:
    """The page's inline JSON `<name>-data` (explorer, browser), parsed."""
    text = path.read_text(encoding="utf-8")
    blob = re.search(rf'<script type="application/json" id="{name}-data">(.*?)</script>', text, re.S)
    return json.loads(blob.group(1))


def dump_dom(page: Path, tmp_path: Path, fragment: str = "") -> tuple[str, list[str]]:
    """The page's DOM after its scripts ran (opened at `#fragment`), and its console lines."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile-dom'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
