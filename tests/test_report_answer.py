"""The page's first section, the answer (reports/run/answer.py): per class its driver channels, each a row of its top
images, their shares, the accuracy line; the drivers' rows in top_examples; and, in Chromium at 1400 x 900, a first
screen that names each class with at least 4 readable images of it, shown without scripts and with names escaped."""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest

from analysis.stats import topk
from analysis.stats.summary import PredictionSummary
from analysis.store import contract
from reports.run.answer import IMAGES, describe_accuracy, make_answer
from reports.run.inputs import Overlays
from tests.browser import needs_chromium, open_in_playwright, parse
from tests.helpers import HOSTILE

CLASSES = ("cat", "dog")


def planted_stats(rng: np.random.Generator, attributed: bool, n: int = 20) -> pd.DataFrame:
    """channel_stats rows of one layer: random contributions (some negative), or none; random AUCs."""
    rows = []
    for cls in CLASSES:
        contrib = rng.normal(0.0, 1.0, n) if attributed else np.full(n, np.nan)
        auc = rng.uniform(0.2, 0.9, n)
        by_contrib = pd.Series(contrib).rank(ascending=False, method="first")
        by_auc = pd.Series(auc).rank(ascending=False, method="first")
        for c in range(n):
            rows.append(
                {
                    contract.LAYER: "conv5_3",
                    contract.STAT: contract.STAT_MEAN,
                    contract.CLASS: cls,
                    contract.CHANNEL: c,
                    contract.AUC: auc[c],
                    contract.CONTRIB_MEAN: contrib[c],
                    contract.RANK_CONTRIBUTION: by_contrib[c] if attributed else np.nan,
                    contract.RANK_SELECTIVITY: by_auc[c],
                }
            )
    return pd.DataFrame(rows)


def planted_examples(channels: dict[str, list[int]], k: int = 8) -> pd.DataFrame:
    """top_examples rows of each class's channels: k images within the class, k over all (sharing half)."""
    rows = []
    for cls, chans in channels.items():
        for c in chans:
            for i in range(k):
                rows.append(("conv5_3", cls, contract.SCOPE_CLASS, c, i + 1, f"{cls}-{c}-{i}.jpg", float(k - i)))
                rows.append(("conv5_3", cls, contract.SCOPE_ALL, c, i + 1, f"{cls}-{c}-{i // 2}.jpg", float(k - i)))
    cols = [contract.LAYER, contract.CLASS, contract.SCOPE, contract.CHANNEL, contract.IMAGE_RANK]
    return pd.DataFrame(rows, columns=[*cols, contract.IMAGE_ID, contract.VALUE])


def summary(matrix: np.ndarray) -> PredictionSummary:
    n = int(matrix.sum())
    return PredictionSummary(CLASSES, contract.GROUP_LABEL, n, n, {}, {}, n, int(np.trace(matrix)), matrix)


def inputs_for(stats: pd.DataFrame, examples: pd.DataFrame, matrix: np.ndarray) -> types.SimpleNamespace:
    tiles = {
        (i, layer, int(c)): f"tiles/{n}.jpg"
        for n, (i, layer, c) in enumerate(
            zip(examples[contract.IMAGE_ID], examples[contract.LAYER], examples[contract.CHANNEL])
        )
    }
    overlays = Overlays(tiles, {}, {}, [], 0, None)
    return types.SimpleNamespace(
        concepts=None,
        layers=["conv5_3"],
        stats=stats,
        examples=examples,
        overlays=overlays,
        classes=list(CLASSES),
        summary=summary(matrix),
    )


@pytest.mark.parametrize("attributed", [True, False])
def test_rows_are_the_strongest_drivers_with_their_share_or_the_most_selective(attributed):
    rng = np.random.default_rng(7 + attributed)
    stats = planted_stats(rng, attributed)
    key = contract.CONTRIB_MEAN if attributed else contract.AUC
    want = {
        cls: stats[stats[contract.CLASS] == cls].nlargest(topk.DRIVERS, key)[contract.CHANNEL].tolist()
        for cls in CLASSES
    }
    answer = make_answer(inputs_for(stats, planted_examples(want), np.array([[8, 2], [1, 9]])))["answer"]
    assert [c["name"] for c in answer["classes"]] == list(CLASSES)
    assert ("no attribution" in answer["note"]) != attributed
    for cls, shown in zip(CLASSES, answer["classes"]):
        assert [r["name"] for r in shown["rows"]] == [f"conv5_3:{c}" for c in want[cls]]
        s = stats[stats[contract.CLASS] == cls]
        positive = s.loc[s[contract.CONTRIB_MEAN] > 0, contract.CONTRIB_MEAN].sum()
        for row, c in zip(shown["rows"], want[cls]):
            mine = s.loc[s[contract.CHANNEL] == c, contract.CONTRIB_MEAN].item()
            assert row["share"] == (pytest.approx(mine / positive) if attributed else None)
            ids = [t["image_id"] for t in row["images"]]
            # within the class first, each image once, IMAGES of them, each with its overlay tile
            assert ids == [f"{cls}-{c}-{i}.jpg" for i in range(IMAGES)]
            assert all(t["src"] for t in row["images"])
            assert row["href"] == f"#channel=conv5_3:{c}"  # the channel browser opens it with its galleries


def test_a_channel_without_images_links_to_the_browser():
    stats = planted_stats(np.random.default_rng(1), True)
    answer = make_answer(inputs_for(stats, planted_examples({}), np.eye(2, dtype=int)))["answer"]
    row = answer["classes"][0]["rows"][0]
    assert row["href"] == "#channel=" + row["name"] and row["images"] == []


def test_accuracy_line_counts_each_confusion():
    text = describe_accuracy(summary(np.array([[8, 2], [1, 9]])))
    assert text == "Accuracy 85% on 20 labeled images; 2 images of cat called dog, 1 image of dog called cat."
    assert describe_accuracy(summary(np.array([[3, 0], [0, 4]]))).endswith("; no mistakes.")


def read_tables(page):
    stats = pd.read_parquet(page / contract.CHANNEL_STATS)
    return stats[stats[contract.STAT] == contract.STAT_MEAN], pd.read_parquet(page / contract.TOP_EXAMPLES)


@pytest.mark.slow
def test_top_examples_hold_each_class_s_strongest_drivers_after_its_selective_channels(page):
    stats, examples = read_tables(page)
    m = 2  # tests/small_runs.py's top_channels
    layer = topk.find_driver_layer(stats, ["conv5_3", "conv4_3"])
    assert layer == "conv5_3"  # the small run attributes conv5_3
    shown = examples[(examples[contract.SCOPE] != contract.SCOPE_MISTAKE) & (examples[contract.LAYER] == layer)]
    for cls in stats[contract.CLASS].unique():
        s = stats[(stats[contract.LAYER] == layer) & (stats[contract.CLASS] == cls)]
        selective = s.nsmallest(m, contract.RANK_SELECTIVITY)[contract.CHANNEL].tolist()
        drivers = s.nsmallest(topk.DRIVERS, contract.RANK_CONTRIBUTION)[contract.CHANNEL].tolist()
        want = list(dict.fromkeys(selective + drivers))
        mine = shown[shown[contract.CLASS] == cls].sort_values(contract.CHANNEL_RANK)
        assert mine.drop_duplicates(contract.CHANNEL)[contract.CHANNEL].tolist() == want
        assert mine.drop_duplicates(contract.CHANNEL)[contract.CHANNEL_RANK].tolist() == list(range(1, len(want) + 1))


FIRST_SCREEN = """() => [...document.querySelectorAll('.answer-class')].map(box => ({
    name: box.querySelector('h3').textContent,
    top: box.querySelector('h3').getBoundingClientRect().top,
    images: [...box.querySelectorAll('img')].filter(i => { const r = i.getBoundingClientRect();
        return r.top < 900 && r.width >= 112 && r.height >= 112 && i.complete && i.naturalWidth > 0 }).length,
}))"""


@pytest.mark.slow
@needs_chromium
def test_first_screen_names_each_class_with_four_readable_images_without_scripts(page):
    index = page / contract.INDEX_HTML
    with open_in_playwright(index) as (tab, problems):
        tab.set_viewport_size({"width": 1400, "height": 900})
        tab.wait_for_load_state("load")
        boxes = tab.evaluate(FIRST_SCREEN)
        assert problems == []
    classes = json.loads((page.parent / contract.RUN_JSON).read_text())["classes"]
    assert [b["name"] for b in boxes] == [f"says \u201c{c}\u201d" for c in classes]
    assert all(b["top"] < 900 and b["images"] >= 4 for b in boxes), boxes
    # The same images are plain <img> in the HTML (no script draws them), named by their escaped file names.
    text, c = parse(index)
    start = text.index("id='answer'")
    _, answer = parse_part(text[start : text.index("<h2", start + 1)])
    imgs = [a for tag, a in answer.tags if tag == "img"]
    assert len(imgs) >= 8 and all(a["src"].startswith("tiles/") for a in imgs)
    ids = set(pd.read_parquet(page / contract.TOP_EXAMPLES)[contract.IMAGE_ID])
    assert {a["alt"] for a in imgs} <= ids
    assert not any(tag == "img" and a.get("src") == "x" for tag, a in c.tags)  # a hostile name never becomes a tag
    for name in HOSTILE:
        assert name not in text


def parse_part(html: str):
    from tests.browser import Collector

    c = Collector()
    c.feed(html)
    return html, c
