"""The concepts on the report page (issue #21), in Debian's chromium: the first screen shows each class's concept
rows, each a row of region tiles of at least 112 px (plain <img>), the images being the class's images where the
concept peaks highest by concept_images.parquet; a hover shows the concept's heatmap; a card names the concepts
of each class present in the image. The page is the session's real run (random weights, hostile names)."""

from __future__ import annotations

from urllib.parse import quote

import pandas as pd
import pytest

from analysis.store import concept_contract as cc
from analysis.store import contract
from tests.browser import needs_chromium, open_in_playwright

pytestmark = [pytest.mark.slow, needs_chromium]

FIRST_SCREEN = """() => [...document.querySelectorAll('.answer-class')].map(col => ({
  name: col.querySelector('h3').textContent,
  tiles: [...col.querySelectorAll('.concept-row')].slice(0, 1).flatMap(row =>
    [...row.querySelectorAll('img')].map(i => ({alt: i.alt, top: i.getBoundingClientRect().top,
      width: i.getBoundingClientRect().width, loaded: i.complete && i.naturalWidth === 112}))),
  shown: [...col.querySelectorAll('.concept-row img')]
    .filter(i => i.getBoundingClientRect().bottom < innerHeight).length,
}))"""


def expected_regions(page) -> dict[str, list[str]]:
    """Per class, its first concept's images as the page must show them: the class's own images (by label) with
    the highest peak, ties by image id, five."""
    images = pd.read_parquet(page / cc.CONCEPT_IMAGES)
    preds = pd.read_parquet(page.parent / contract.PREDICTIONS)
    label = dict(zip(preds[contract.IMAGE_ID], preds[contract.LABEL]))
    first = images[(images[cc.CONCEPT] == 0) & (images[contract.IMAGE_ID].map(label) == images[contract.CLASS])]
    first = first.sort_values([cc.PEAK, contract.IMAGE_ID], ascending=[False, True])
    return {cls: rows[contract.IMAGE_ID].head(5).tolist() for cls, rows in first.groupby(contract.CLASS)}


def test_the_first_screen_shows_each_class_s_concepts_as_region_tiles(page):
    want = expected_regions(page)
    assert set(want) == {"cat", "dog"}
    with open_in_playwright(page / contract.INDEX_HTML, width=1400, height=900) as (tab, problems):
        tab.wait_for_load_state("load")
        columns = tab.evaluate(FIRST_SCREEN)
        assert [c["name"] for c in columns] == ["says \u201ccat\u201d", "says \u201cdog\u201d"]
        for cls, col in zip(("cat", "dog"), columns):
            assert col["shown"] >= 4  # at least 4 pictures per class on the first screen
            assert [t["alt"] for t in col["tiles"]] == want[cls]
            assert all(t["loaded"] and t["width"] >= 112 and t["top"] < 900 for t in col["tiles"])
        tile = tab.locator(".ctile").first
        assert "-heat.jpg" in tile.evaluate("a => getComputedStyle(a).backgroundImage")
        tile.hover()
        tab.wait_for_function("() => getComputedStyle(document.querySelector('.ctile img')).opacity === '0'")
    assert problems == []


def test_a_region_opens_its_card_with_the_image_s_concepts(page):
    image_id = expected_regions(page)["dog"][0]
    with open_in_playwright(page / contract.INDEX_HTML, width=1400, height=900) as (tab, problems):
        tab.locator(f".ctile[href='#image={quote(image_id, safe='')}']").first.click()
        tab.wait_for_function("() => document.querySelectorAll('#card .concepts').length === 2")
        assert tab.inner_text("#card h3") == image_id
        text = tab.inner_text("#card")
        assert "concepts of cat here: #" in text and "concepts of dog here: #" in text
    assert problems == []
