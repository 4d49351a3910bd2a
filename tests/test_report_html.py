"""The report end to end on a tiny real run (random weights, 64 px, hostile file names), and its page:
escaped, self-contained, every reference present, rendered by a real headless chromium without console errors."""

from __future__ import annotations

import json
import os
import re
from html import unescape
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis.config import make_config, read_config_section
from analysis.store import contract
from jobs import extract, report
from jobs.config import ExtractConfig, ReportConfig
from tests.browser import dump_dom, needs_chromium, page_data, parse, render_in_chromium
from tests.helpers import HOSTILE, write_image

pytestmark = pytest.mark.slow  # the report end to end


def test_tables_and_tiles_written(page):
    stats = pd.read_parquet(page / contract.CHANNEL_STATS)
    assert tuple(stats.columns) == contract.CHANNEL_STATS_COLUMNS
    assert len(stats) == 2 * 2 * 2 * 512  # (conv4_3 + conv5_3) x (mean, max) x classes x 512 channels
    top = pd.read_parquet(page / contract.TOP_EXAMPLES)
    assert tuple(top.columns) == contract.TOP_EXAMPLES_COLUMNS
    shown = top[top[contract.SCOPE] != contract.SCOPE_MISTAKE]
    mean = stats[(stats[contract.LAYER] == "conv5_3") & (stats[contract.STAT] == contract.STAT_MEAN)]
    drivers = sum(  # each class's 3 strongest conv5_3 drivers outside its 2 most selective (the page's answer)
        ((g[contract.RANK_CONTRIBUTION] <= 3) & (g[contract.RANK_SELECTIVITY] > 2)).sum()
        for _, g in mean.groupby(contract.CLASS)
    )
    assert len(shown) == (2 * 2 * 2 + drivers) * 2 * 5  # (layers x classes x channels + drivers) x scopes x images
    tiles = [t for t in (page / "tiles").glob("*.jpg") if not t.name.startswith("concept-")]
    assert tiles and all(Image.open(t).size == (64, 64) for t in tiles)
    regions = list((page / "tiles").glob("concept-*.jpg"))  # the answer's concept regions, at 112 px, with heat
    assert regions and all(Image.open(t).size == (112, 112) for t in regions)
    html = (page / contract.INDEX_HTML).read_text(encoding="utf-8")
    assert "RANDOM WEIGHTS" in html
    assert re.search(r"\d+ channel means of the shown images were recomputed; 0 differ", html)


def test_hostile_names_are_escaped_everywhere(page):
    text, c = parse(page / contract.INDEX_HTML)
    for name in HOSTILE:
        assert name not in text  # never raw
        assert any(name in t for t in c.text)  # but shown, as text
        assert any(name in (a.get("title") or "") for _, a in c.tags)  # and as an attribute value, intact
    for tag, attrs in c.tags:
        assert not [a for a in attrs if a.lower().startswith("on")], (tag, attrs)
        assert not (tag == "img" and attrs.get("src") == "x")
    # 2 data blobs (map, browser) and 4 scripts (sections, map, cards, browser): no other
    assert [t for t, _ in c.tags].count("script") == 6
    data = page_data(page / contract.INDEX_HTML, "explorer")
    assert all(any(i.endswith("/" + name) for i in data["ids"]) for name in HOSTILE)


def test_page_is_self_contained_and_references_exist(page):
    text, c = parse(page / contract.INDEX_HTML)
    assert not re.search(r"https?://", text)
    refs = [a[k] for _, a in c.tags for k in ("src", "href") if a.get(k)]
    assert refs
    browser = page_data(page / contract.INDEX_HTML, "browser")
    rows = {(browser["layers"][k], c) for k, c in zip(browser["layer"], browser["channel"])}
    for ref in refs:
        if ref.startswith("#channel="):  # a row of the channel browser, opened by its script
            layer, channel = ref[len("#channel=") :].split(":")
            assert (layer, int(channel)) in rows and layer in browser["report_layers"], ref
            continue
        if ref.startswith("#image="):  # a card of the map: the image is on the page (the dataset checks' link)
            named = [*c.text, *(a.get("alt") or "" for _, a in c.tags)]  # as text, or a picture's alt
            assert any(unquote(ref[len("#image=") :]) in t for t in named), ref
            continue
        if ref.startswith("#"):
            assert f'id="{ref[1:]}"' in text or f"id='{ref[1:]}'" in text, ref
            continue
        assert (page / unquote(ref)).exists(), ref


@needs_chromium
def test_chromium_renders_page_without_console_errors(page, tmp_path):
    console, pixels = render_in_chromium(page / contract.INDEX_HTML, tmp_path)
    assert console == [], console
    assert pixels.std() > 10 and (pixels < 200).mean() > 0.02  # not blank: text, figures and tiles drew


@needs_chromium
def test_chromium_probe_catches_an_unescaped_name(tmp_path):
    """The control: the same probe on a page that pastes a hostile name raw reports the alert."""
    bad = tmp_path / "bad.html"
    bad.write_text(f"<!DOCTYPE html><html><head></head><body><p>{HOSTILE[0]}</p></body></html>", encoding="utf-8")
    console, _ = render_in_chromium(bad, tmp_path)
    assert any("ALERT 1" in line for line in console), console


def test_unlabeled_run_ranks_by_prediction_and_says_so(tmp_path):
    from analysis.store.synthetic import SyntheticRun, write_synthetic_run

    run = write_synthetic_run(
        tmp_path / "run", SyntheticRun(n_images=60, layers={"conv5_3": 8}, labeled=False, planted=("conv5_3", 2, "dog"))
    )
    report.main(
        make_config(
            ReportConfig,
            {
                **read_config_section(None, "report"),
                "dataset_issues": read_config_section(None, "report_qa"),
                "run": str(run),
                "layers": ["conv5_3"],
                "overlays": False,
                "progress": False,
            },
        )
    )
    html = (run / contract.REPORT_DIR / contract.INDEX_HTML).read_text(encoding="utf-8")
    assert "grouped by predicted class" in html and "no labels" in html
    stats = pd.read_parquet(run / contract.REPORT_DIR / contract.CHANNEL_STATS)
    assert (stats[contract.GROUP_BY] == contract.GROUP_PRED).all()


def test_changed_image_is_reported_as_a_mismatch(tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        write_image(data / f"cat.{i}.jpg", size=(64, 64), seed=i)
        write_image(data / f"dog.{i}.jpg", size=(64, 64), seed=50 + i)
    out = tmp_path / "run"
    extract.main(
        make_config(
            ExtractConfig,
            {
                **read_config_section(None, "extract"),
                "data": str(data),
                "out": str(out),
                "weights": "random",
                "image_size": 64,
                "layers": ["conv5_3"],
                "device": "cpu",
                "precision": "fp32",
                "workers": 0,
                "download": False,
                "progress": False,
            },
        )
    )
    for i in range(3):  # the dataset changes after the run
        write_image(data / f"cat.{i}.jpg", size=(64, 64), seed=900 + i)
    report.main(
        make_config(
            ReportConfig,
            {
                **read_config_section(None, "report"),
                "dataset_issues": read_config_section(None, "report_qa"),
                "run": str(out),
                "layers": ["conv5_3"],
                "device": "cpu",
                "top_channels": 2,
                "top_images": 3,
                "progress": False,
            },
        )
    )
    _, c = parse(out / contract.REPORT_DIR / contract.INDEX_HTML)
    text = " ".join(c.text)
    assert re.search(r"[1-9]\d* of \d+ recomputed channel means differ from the recorded ones", text)
    assert "cat.0.jpg" in text


def test_escaping_helpers_for_each_context():
    from reports import escape

    assert escape.text("a\"b'c<d>&") == "a&quot;b&#x27;c&lt;d&gt;&amp;"
    assert escape.url("tiles/conv5_3-c1-00001.jpg") == "tiles/conv5_3-c1-00001.jpg"
    assert escape.url('../a b/"x".parquet') == "../a%20b/%22x%22.parquet"
    assert escape.url(os.fsdecode(b"../caf\xe9/x")) == "../caf%E9/x"  # the real bytes of the folder's name
    for bad in ("javascript:alert(1)", "http://example.com/x.png", "/etc/passwd", "data:text/html,x"):
        with pytest.raises(ValueError):
            escape.url(bad)
    blob = escape.script_json({"ids": ["</script><script>alert(1)</script>", "<!--", "it's & done"]})
    assert "<" not in blob and ">" not in blob and "&" not in blob and "'" not in blob
    assert json.loads(blob)["ids"][0] == "</script><script>alert(1)</script>"


def _browser_data(page: Path) -> dict:
    return page_data(page / contract.INDEX_HTML, "browser")


def test_channel_browser_data_covers_every_channel_with_independent_histograms(page):
    data = _browser_data(page)
    run = page.parent
    assert data["layers"] == ["conv4_3", "conv5_3"] and len(data["channel"]) == 2 * 512
    stats = pd.read_parquet(page / contract.CHANNEL_STATS)
    preds = pd.read_parquet(run / "predictions").set_index("image_id")
    for layer, channel in (("conv4_3", 7), ("conv5_3", 300)):
        i = next(
            j
            for j in range(len(data["channel"]))
            if data["layers"][data["layer"][j]] == layer and data["channel"][j] == channel
        )
        acts = pd.read_parquet(run / "activations" / layer).set_index("image_id")[f"c{channel}"]
        top = float(acts.max())
        assert data["top"][i] == pytest.approx(top, rel=1e-4)
        for k, cls in enumerate(data["classes"]):
            row = stats[
                (stats.layer == layer) & (stats.stat == "mean") & (stats.channel == channel) & (stats["class"] == cls)
            ].iloc[0]
            assert data["auc"][k][i] == pytest.approx(row.auc, abs=1e-4)
            values = acts[acts.index.isin(preds.index[(preds.label == cls) & (preds.status == "ok")])].to_numpy()
            want, _ = np.histogram(values, bins=16, range=(0, top))
            assert data["hist"][i][k] == want.tolist()


@needs_chromium
def test_channel_browser_sorts_and_opens_a_channel_in_chromium(page, tmp_path):
    data = _browser_data(page)
    best = int(np.nanargmax([v if v is not None else np.nan for v in data["auc"][0]]))
    dom, console = dump_dom(page / contract.INDEX_HTML, tmp_path, "#sort=auc:0:desc")
    assert console == [], console
    first = re.search(r'<tr data-row="(\d+)"', dom)
    assert first and int(first.group(1)) == best
    # Any channel opened by its link: its statistics, histograms and galleries (no static gallery to link to).
    j = len(data["channel"]) - 7
    layer, channel = data["layers"][data["layer"][j]], data["channel"][j]
    dom, console = dump_dom(page / contract.INDEX_HTML, tmp_path, f"#channel={layer}:{channel}")
    assert console == [], console
    detail = re.search(r'<div id="cb-detail" class="detail">(.*?)</div><div class="scroll">', dom, re.S).group(1)
    assert f"{layer} channel {channel}" in detail and detail.count('class="bar"') == 16 * len(data["classes"])
    assert detail.count('class="gtile"') >= 4


def test_run_table_has_no_empty_row(page):
    html = (page / contract.INDEX_HTML).read_text(encoding="utf-8")
    table = re.search(r"<h2 id='run'>.*?(<table.*?</table>)", html, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    assert len(rows) >= 5
    for row in rows:
        cells = [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
        assert len(cells) == 2 and all(cells), row  # a name and its value, never a blank header row
