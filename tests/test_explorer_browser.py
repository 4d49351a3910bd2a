"""The report page driven like a user, in Debian's Chromium through Playwright: sort the channel table, open a
channel, look an image up, hover and click a point of the map; no console error, no script from a file name."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.browser import CHROMIUM, needs_chromium
from tests.test_report_html import HOSTILE, page  # noqa: F401  (the module fixture: a real run with hostile names)

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")


@pytest.fixture
def browser_page(page):  # noqa: F811
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        tab = browser.new_page(viewport={"width": 1200, "height": 900})
        problems = []
        tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        tab.on("pageerror", lambda e: problems.append(str(e)))
        tab.on("dialog", lambda d: (problems.append("dialog " + d.message), d.dismiss()))
        tab.goto((page / "index.html").resolve().as_uri())
        yield tab, problems
        browser.close()


def _data(page_dir, name):  # noqa: F811
    text = (page_dir / "index.html").read_text(encoding="utf-8")
    return json.loads(re.search(rf'<script type="application/json" id="{name}-data">(.*?)</script>', text,
                                re.S).group(1))


@needs_chromium
def test_sort_select_look_up_and_hover(page, browser_page):  # noqa: F811
    tab, problems = browser_page
    data = _data(page, "browser")
    # Sort by the d of the second class, largest first: the first row is that channel.
    tab.click("#cb-table th[data-col=d][data-k='1']")
    d = np.array([np.nan if v is None else v for v in data["d"][1]])
    first = tab.locator("#cb-table tr[data-row]").first
    assert int(first.get_attribute("data-row")) == int(np.nanargmax(d))
    tab.click("#cb-table th[data-col=d][data-k='1']")                       # again: smallest first
    assert int(tab.locator("#cb-table tr[data-row]").first.get_attribute("data-row")) == int(np.nanargmin(d))
    # Filter to a layer and a channel number, open it with the keyboard.
    tab.select_option("#cb-layer", label="conv5_3")
    tab.fill("#cb-filter", "17")
    rows = tab.locator("#cb-table tr[data-row]")
    assert all(rows.nth(j).locator("td").nth(1).inner_text().startswith("17") for j in range(rows.count()))
    exact = next(j for j in range(rows.count()) if rows.nth(j).locator("td").nth(1).inner_text() == "17")
    rows.nth(exact).press("Enter")
    assert tab.inner_text("#cb-detail h3") == "conv5_3 channel 17"
    assert tab.locator("#cb-detail .bar").count() == 16 * len(data["classes"])
    # Look an image up by part of its name: the hostile one, which must run nothing.
    tab.fill("#lookup", "onerror")
    tab.locator("#lookup-list li").first.click()
    assert HOSTILE[0] in tab.inner_text("#card h3")
    # Hover a point of the map that has no close neighbour: the tooltip names it; a click opens its card.
    e = _data(page, "explorer")
    box = tab.locator("#map-canvas").bounding_box()
    xs, ys = np.array(e["x"]), np.array(e["y"])
    px = 12 + (xs - xs.min()) / ((xs.max() - xs.min()) or 1) * (900 - 24)
    py = 520 - 12 - (ys - ys.min()) / ((ys.max() - ys.min()) or 1) * (520 - 24)
    gaps = np.hypot(px[:, None] - px[None], py[:, None] - py[None]) + np.eye(len(px)) * 1e9
    i = int(np.argmax(gaps.min(axis=1)))
    x, y = box["x"] + px[i] * box["width"] / 900, box["y"] + py[i] * box["height"] / 520
    tab.mouse.move(x, y)
    assert tab.locator("#map-tip").is_visible() and e["ids"][i] in tab.inner_text("#map-tip")
    tab.mouse.click(x, y)
    assert tab.inner_text("#card h3") == e["ids"][i]
    assert problems == []
