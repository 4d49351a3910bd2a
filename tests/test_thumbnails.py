"""Every ok image's thumbnail in sprite sheets: each cell is its own picture (against an independent downscale of the
file), an image gone since the run gets none and its card says why, the key is checked, and in Chromium a card of an
image in no gallery shows its thumbnail, loaded only when needed, with hostile names running nothing."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.config import ConfigError, make_config, read_config_section
from analysis.store.synthetic import SyntheticRun, write_synthetic_run
from jobs import cli, report
from jobs.config import ReportConfig
from tests.browser import needs_chromium, open_in_playwright
from tests.helpers import HOSTILE

pytestmark = pytest.mark.slow  # the report end to end

PICTURES = 12
GONE = "dog.41.jpg"  # deleted after the run


def _picture(seed: int) -> bytes:
    """A 640 x 480 JPEG with large smooth shapes (so a 32 px downscale of it is distinct from the others)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def sprite_run(tmp_path_factory) -> Path:
    """300 ok images (two sheets), the hostile names among them, and one file deleted after the run."""
    base = tmp_path_factory.mktemp("sprites")
    run = write_synthetic_run(
        base / "run",
        SyntheticRun(
            n_images=300,
            layers={"conv5_3": 16},
            hostile=HOSTILE,
            data=base / "data",
            pictures=[_picture(s) for s in range(PICTURES)],
        ),
    )
    (base / "data" / GONE).unlink()
    assert (
        cli.run_main(
            report.parse,
            report.main,
            "report",
            ["--run", str(run), "--no-overlays", "--no-progress", "--layers", "conv5_3"],
        )
        == 0
    )
    return run


def _explorer(run: Path) -> dict:
    text = (run / "report" / "index.html").read_text(encoding="utf-8")
    return json.loads(re.search(r'id="explorer-data">(.*?)</script>', text, re.S).group(1))


def _cell(run: Path, sprites: dict, i: int) -> np.ndarray:
    t, k = sprites["size"], i % sprites["per_sheet"]
    sheet = np.asarray(Image.open(run / "report" / sprites["sheets"][i // sprites["per_sheet"]]).convert("RGB"))
    r, c = divmod(k, sprites["columns"])
    return sheet[r * t : (r + 1) * t, c * t : (c + 1) * t].astype(np.float64)


def _independent(path: Path, size: int, fraction: float) -> np.ndarray:
    """The whole file decoded, its centre square of `fraction` of the short side, box-filtered to size x size."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    side = min(w, h) * fraction
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.asarray(im.resize((size, size), Image.BOX, box=box), dtype=np.float64)


def test_every_cell_is_its_own_picture(sprite_run):
    e = _explorer(sprite_run)
    s = e["sprites"]
    assert s["note"] is None and len(s["sheets"]) == 2 and s["size"] == 80  # the default
    assert all(re.fullmatch(r"thumbs/sheet-\d{5}\.jpg", name) for name in s["sheets"])  # numbers, never names
    data = sprite_run.parent / "data"
    fraction = 64 / 73  # the synthetic run's preprocessing: imagenet at 64 px (resize 73)
    refs = {}
    for i, image_id in enumerate(e["ids"]):
        if image_id == GONE:
            continue
        ref = _independent(data / image_id, s["size"], fraction)
        refs[i] = ref
    pictures = {}
    for ref in refs.values():  # one reference per distinct picture, to say which one a cell is
        pictures.setdefault(ref.tobytes(), ref)
    assert len(pictures) == PICTURES
    for i, ref in refs.items():
        cell = _cell(sprite_run, s, i)
        assert np.abs(cell - ref).mean() < 6, e["ids"][i]
        nearest = min(pictures.values(), key=lambda p: np.abs(cell - p).mean())
        assert nearest is pictures[ref.tobytes()]


def test_an_image_gone_since_the_run_has_no_thumbnail_and_says_why(sprite_run):
    e = _explorer(sprite_run)
    i = e["ids"].index(GONE)
    assert e["sprites"]["missing"] == {str(i): "not found in DATA any more"}
    assert np.abs(_cell(sprite_run, e["sprites"], i) - 238).mean() < 3  # a grey cell, no other image's picture


def test_the_key_is_checked_and_zero_turns_thumbnails_off(tmp_path):
    base = {**read_config_section(None, "report"), "dataset_issues": read_config_section(None, "report_qa")}
    for bad in (4, 129, -1, True, "32"):
        with pytest.raises(ConfigError, match=r"image_thumbnails: .* 0 \(off\) or an integer from 8 to 128"):
            make_config(ReportConfig, {**base, "image_thumbnails": bad})
    run = write_synthetic_run(
        tmp_path / "run",
        SyntheticRun(n_images=40, layers={"conv5_3": 8}, data=tmp_path / "data", pictures=[_picture(0)]),
    )
    assert (
        cli.run_main(
            report.parse,
            report.main,
            "report",
            ["--run", str(run), "--no-overlays", "--no-progress", "--layers", "conv5_3", "--set", "image_thumbnails=0"],
        )
        == 0
    )
    assert _explorer(run)["sprites"] is None and not (run / "report" / "thumbs").exists()


@needs_chromium
def test_a_card_of_an_image_in_no_gallery_shows_its_thumbnail_in_chromium(sprite_run):
    pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
    e = _explorer(sprite_run)
    s = e["sprites"]
    with open_in_playwright(sprite_run / "report" / "index.html") as (tab, problems):
        sheets = []
        tab.on("request", lambda r: sheets.append(r.url.rsplit("/", 1)[1]) if "/thumbs/" in r.url else None)
        tab.wait_for_timeout(300)
        assert sheets == []  # nothing loaded before a card or a hover needs it
        for name in (*HOSTILE, e["ids"][-1]):  # the last one is on the second sheet
            i = e["ids"].index(name)
            assert e["thumb"][i] is None  # in no gallery: only the sprite shows it
            tab.fill("#lookup", name)
            tab.locator(f"#lookup-list li[data-i='{i}']").click()
            img = tab.locator("#card .sprite img").first  # the card's own picture (its Grad-CAM figures follow)
            img.wait_for()
            tab.wait_for_function("() => document.querySelector('#card .sprite img').complete")
            assert img.get_attribute("src") == s["sheets"][i // s["per_sheet"]]
            assert img.evaluate("img => img.naturalWidth") == s["columns"] * s["size"]
            shot = np.asarray(
                Image.open(io.BytesIO(tab.locator("#card .sprite").first.screenshot()))
                .convert("RGB")
                .resize((s["size"], s["size"]), Image.BOX),
                dtype=np.float64,
            )
            assert np.abs(shot - _cell(sprite_run, s, i)).mean() < 8  # what shows is that image's cell
        assert set(sheets) == {"sheet-00000.jpg", "sheet-00001.jpg"}
        # An image gone since the run: the card says why, no broken picture.
        tab.evaluate("id => { location.hash = '#image=' + encodeURIComponent(id); }", GONE)
        tab.wait_for_function("() => document.querySelector('#card .nothumb') !== null")
        assert "not found in DATA any more" in tab.inner_text("#card .nothumb")
        assert problems == []
