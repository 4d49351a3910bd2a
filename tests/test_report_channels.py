"""Issue #20's page, driven like a user in Debian's Chromium: short before any interaction, any channel of a report
layer opened by its link shows its top images with where it fires, a tile opens the image's card with its Grad-CAM
per class, and the card's channel links lead to the channel and back. conftest's `page`: a real run, random
weights, 64 px, hostile file names."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from analysis.store import contract
from tests.browser import needs_chromium, open_in_playwright, page_data

pytestmark = pytest.mark.slow  # reads the report of a real run (conftest's page)

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")


@pytest.fixture
def wide(page):
    with open_in_playwright(page / contract.INDEX_HTML, width=1400, height=900) as opened:
        yield opened


@needs_chromium
def test_page_is_short_and_shows_few_images_before_any_interaction(page, wide):
    tab, problems = wide
    assert tab.evaluate("document.documentElement.scrollHeight") < 8000
    visible = tab.evaluate(
        "[...document.images].filter(i => i.checkVisibility()).map(i => i.closest('details').id"
        " || i.closest('details').querySelector('h2').id)"
    )
    answer = [s for s in visible if s == "answer"]
    browser = page_data(page / contract.INDEX_HTML, "browser")
    assert len(answer) <= len(browser["classes"]) * 3 * 5  # classes x drivers x images per row
    assert set(visible) <= {"answer", "mistakes"}  # one other open section with pictures: the mistakes
    assert problems == []


@needs_chromium
def test_random_channels_open_from_their_link_with_their_top_images_and_peaks(page, wide):
    tab, problems = wide
    tops = pd.read_parquet(page / contract.CHANNEL_TOPS)
    rng = random.Random(20)
    picked = [(layer, rng.randrange(512)) for layer in ("conv4_3", "conv5_3") for _ in range(3)]
    for layer, channel in picked:
        tab.evaluate("h => { location.hash = h; }", f"#channel={layer}:{channel}")
        tab.wait_for_function(
            f"() => (document.querySelector('#cb-detail h3') || {{}}).textContent === '{layer} channel {channel}'"
        )
        assert tab.locator("#cb-detail h3").is_visible()
        want = tops[(tops[contract.LAYER] == layer) & (tops[contract.CHANNEL] == channel)]
        all_ids = list(want[want[contract.SCOPE] == contract.SCOPE_ALL].sort_values(contract.IMAGE_RANK).image_id)
        tiles = tab.locator("#cb-detail .gtile")
        assert tiles.count() >= 4
        first = [tiles.nth(j).locator(".name").get_attribute("title") for j in range(len(all_ids))]
        assert first == all_ids  # the first gallery: over all images, best first
        # The thumbnail drew (its sheet loaded) and the ring sits inside the tile.
        tile = tiles.first
        tile.locator("img").first.wait_for()
        assert (
            tile.locator("img").first.evaluate(
                "i => new Promise(r => i.complete ? r(i.naturalWidth) :"
                " i.addEventListener('load', () => r(i.naturalWidth)))"
            )
            > 0
        )
        ring, box = tile.locator(".peak").bounding_box(), tile.locator(".gpic").bounding_box()
        centre = (ring["x"] + ring["width"] / 2, ring["y"] + ring["height"] / 2)
        assert box["x"] <= centre[0] <= box["x"] + box["width"] and box["y"] <= centre[1] <= box["y"] + box["height"]
    assert problems == []


@needs_chromium
def test_a_tile_opens_the_card_with_grad_cam_and_its_channel_links_lead_there_and_back(page, wide):
    tab, problems = wide
    tab.evaluate("h => { location.hash = h; }", "#channel=conv5_3:1")
    tab.locator("#cb-detail .gtile a").first.click()
    image_id = tab.locator("#cb-detail .gtile .name").first.get_attribute("title")
    tab.wait_for_function("() => document.querySelectorAll('#card .cam-fig[data-class]').length === 2")
    assert tab.inner_text("#card h3") == image_id
    assert tab.locator("#card h3").is_visible()
    figs = tab.locator("#card .cam-fig[data-class]")
    classes = page_data(page / contract.INDEX_HTML, "browser")["classes"]
    assert [figs.nth(k).get_attribute("data-class") for k in range(2)] == classes
    for k in range(2):  # a map over the thumbnail, or the words saying there is no positive evidence
        text = figs.nth(k).inner_text()
        assert figs.nth(k).locator("canvas.heat").count() == 1 or "no positive evidence" in text
        assert f"pushed toward {classes[k]}" in text
    # Follow a channel link of the card: the browser opens that channel; back: the card again.
    link = figs.first.locator("a").first
    channel = link.inner_text()[1:]
    link.click()
    tab.wait_for_function(
        f"() => (document.querySelector('#cb-detail h3') || {{}}).textContent === 'conv5_3 channel {channel}'"
    )
    assert not _in_view(tab, "#card h3")
    tab.go_back()
    tab.wait_for_function("() => location.hash.startsWith('#image=')")
    tab.wait_for_timeout(100)
    assert tab.inner_text("#card h3") == image_id and _in_view(tab, "#card h3")
    assert problems == []


def _in_view(tab, selector: str) -> bool:
    return tab.evaluate(
        f"(r => r.bottom > 0 && r.top < innerHeight)(document.querySelector('{selector}').getBoundingClientRect())"
    )
