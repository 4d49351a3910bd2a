"""The report page driven like a user, in Debian's Chromium through Playwright: sort the channel table, open a
channel, look an image up, hover and click a point of the map; no console error, no script from a file name."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.browser import needs_chromium, open_in_playwright
from tests.helpers import HOSTILE

pytestmark = pytest.mark.slow  # reads the report of a real run (conftest's page)

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")


@pytest.fixture
def browser_page(page):
    with open_in_playwright(page / "index.html") as opened:
        yield opened


def _data(page_dir, name):
    text = (page_dir / "index.html").read_text(encoding="utf-8")
    return json.loads(
        re.search(rf'<script type="application/json" id="{name}-data">(.*?)</script>', text, re.S).group(1)
    )


@needs_chromium
def test_sort_select_look_up_and_hover(page, browser_page):
    tab, problems = browser_page
    data = _data(page, "browser")
    # Sort by the d of the second class, largest first: the first row is that channel.
    tab.click("#cb-table th[data-col=d][data-k='1']")
    d = np.array([np.nan if v is None else v for v in data["d"][1]])
    first = tab.locator("#cb-table tr[data-row]").first
    assert int(first.get_attribute("data-row")) == int(np.nanargmax(d))
    tab.click("#cb-table th[data-col=d][data-k='1']")  # again: smallest first
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
    left, top, right, bottom = (float(v) for v in tab.get_attribute("#map-canvas", "data-plot").split(","))
    px = left + (xs - xs.min()) / ((xs.max() - xs.min()) or 1) * (right - left)
    py = bottom - (ys - ys.min()) / ((ys.max() - ys.min()) or 1) * (bottom - top)
    gaps = np.hypot(px[:, None] - px[None], py[:, None] - py[None]) + np.eye(len(px)) * 1e9
    i = int(np.argmax(gaps.min(axis=1)))
    x, y = box["x"] + px[i] * box["width"] / 900, box["y"] + py[i] * box["height"] / 520
    tab.mouse.move(x, y)
    assert tab.locator("#map-tip").is_visible() and e["ids"][i] in tab.inner_text("#map-tip")
    tab.mouse.click(x, y)
    assert tab.inner_text("#card h3") == e["ids"][i]
    assert problems == []


@needs_chromium
def test_every_nav_link_scrolls_its_heading_into_view_below_the_fixed_nav(browser_page):
    tab, problems = browser_page
    tab.set_viewport_size({"width": 1200, "height": 700})
    links = tab.locator("nav a")
    for j in range(links.count()):
        anchor = links.nth(j).get_attribute("href")
        links.nth(j).click()
        tab.wait_for_timeout(50)
        nav_bottom = tab.evaluate("document.querySelector('nav').getBoundingClientRect().bottom")
        top = tab.evaluate(f"document.querySelector('{anchor}').getBoundingClientRect().top")
        assert nav_bottom <= top < 700, f"{anchor}: heading at {top}, the nav ends at {nav_bottom}"
    assert problems == []


@needs_chromium
def test_map_has_axes_named_with_their_explained_variance(page, browser_page):
    tab, problems = browser_page
    e = _data(page, "explorer")
    names = [f"PC1 ({100 * e['explained'][0]:.1f}% of variance)", f"PC2 ({100 * e['explained'][1]:.1f}%)"]
    label = tab.get_attribute("#map-canvas", "aria-label")
    assert all(n in label for n in names), label
    # Ink left of and below the points' box: the axes' lines, ticks and names (no point is drawn there).
    left, _, right, bottom = (float(v) for v in tab.get_attribute("#map-canvas", "data-plot").split(","))
    ink = tab.evaluate(
        """([l, b]) => {
          const c = document.getElementById('map-canvas'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
          let side = 0, under = 0;
          for (let y = 0; y < c.height; y++) {
            for (let x = 0; x < c.width; x++) {
              if (d.data[4 * (y * c.width + x) + 3] > 0) { side += x < l - 8; under += y > b + 8; }
            }
          }
          return [side, under];
        }""",
        [left, bottom],
    )
    assert ink[0] > 200 and ink[1] > 200, ink
    assert problems == []
