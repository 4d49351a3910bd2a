"""The inspect job end to end on a test-made image (64 px, random weights): the numbers on the page against
independent computations, the page's files and escaping, a real headless browser, and a page per image."""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats
from torchvision.models.feature_extraction import create_feature_extractor

import jobs.inspect as inspect_job
from analysis.data.preprocessing import make_preprocessing
from analysis.model.vgg16 import CONV_INDICES, load_model
from analysis.store.contract import channel_column
from analysis.store.synthetic import SyntheticRun, write_synthetic_run
from benchmarks.browser import CHROMIUM as CHROMIUM_PATH
from jobs import cli
from tests.helpers import write_image

HOSTILE = "cat.<img src=x onerror=alert(1)>.png"

LAYERS = ("conv1_2", "conv5_3")

PLANTED = 7  # the synthetic run's conv5_3 channel that separates dogs from cats

CHROMIUM = Path(CHROMIUM_PATH)


@pytest.fixture(scope="module")
def dog_model():
    """Random weights, loaded once through the real loader, with a head that always answers dog (ImageNet 151-268)."""
    loaded = load_model(
        "random",
        classes=None,
        classes_file=None,
        class_map=(("cat", 281, 285), ("dog", 151, 268)),
        download=False,
        seed=0,
    )
    with torch.no_grad():
        loaded.model.classifier[6].bias[151:269] += 30.0
    return loaded


@pytest.fixture(scope="module")
def page(tmp_path_factory, dog_model):
    root = tmp_path_factory.mktemp("inspect")
    image = write_image(root / HOSTILE, size=(80, 64), seed=3)
    run = write_synthetic_run(
        root / "run",
        SyntheticRun(n_images=40, layers={"conv1_2": 64, "conv5_3": 512}, planted=("conv5_3", PLANTED, "dog")),
    )
    mp = pytest.MonkeyPatch()
    mp.setattr(inspect_job, "load_chosen_model", lambda *a, **k: dog_model)
    try:
        code = run_inspect(image, root / "out", "--run", str(run), "--kernel", "sobel")
    finally:
        mp.undo()
    assert code == 0
    page_dir = root / "out" / "inspect" / inspect_job.make_page_name(str(image))
    return {
        "dir": page_dir,
        "html": (page_dir / "index.html").read_text(encoding="utf-8"),
        "numbers": json.loads((page_dir / "inspect.json").read_text()),
        "image": image,
        "run": run,
        "model": dog_model,
    }


def run_inspect(image, out, *extra) -> int:
    argv = [
        "--image",
        str(image),
        "--out",
        str(out),
        "--weights",
        "random",
        "--image-size",
        "64",
        "--layers",
        ",".join(LAYERS),
        *extra,
    ]
    return cli.run_main(inspect_job.parse, inspect_job.main, "inspect", argv)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.slow
def test_conv_panel_equals_functional_conv2d(page):
    view = read_png(page["dir"] / "view.png")  # (64, 64, 3): the crop the demo reads
    k = page["numbers"]["kernel"]
    assert k["name"] == "sobel"
    x = torch.from_numpy(view.copy()).permute(2, 0, 1).float()[None] / 255
    y = F.conv2d(x, torch.tensor(k["weight"]), torch.tensor(k["bias"]), stride=1, padding=1)[0]  # (3, H, W)
    lo, hi = float(y.min()), float(y.max())
    np.testing.assert_allclose(k["display_range"], [lo, hi], rtol=1e-5, atol=1e-6)
    expected = ((y - lo) / (hi - lo) * 255).permute(1, 2, 0).numpy()
    shown = read_png(page["dir"] / "conv_rgb.png").astype(np.float64)
    assert shown.shape == expected.shape
    assert np.abs(shown - expected).max() <= 0.5 + 1e-3  # only the rounding to 0..255


@pytest.mark.slow
def test_probabilities_are_the_softmax_of_the_logits_shown(page):
    n = page["numbers"]
    logits, probs = np.array(n["logits"]), np.array(n["probabilities"])
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)
    assert n["classes"] == ["cat", "dog"] and n["predicted"] == "dog"
    for z, p in zip(logits, probs):  # the table shows the same numbers
        assert f"{z:.6g}" in page["html"] and f"{p:.6g}" in page["html"]
    assert len(n["imagenet_top5"]) == 5


@pytest.mark.slow
def test_means_and_chosen_channel_against_an_independent_computation(page):
    with Image.open(page["image"]) as im:
        x = make_preprocessing("imagenet", 64).transform(im.convert("RGB"))[None]
    nodes = {f"features.{CONV_INDICES[name] + 1}": name for name in LAYERS}
    with torch.inference_mode():
        maps = create_feature_extractor(page["model"].model, return_nodes=nodes)(x)
    for name in LAYERS:
        shown = page["numbers"]["layers"][name]
        expected = maps[name][0].mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(shown["means"], expected, rtol=1e-5, atol=1e-7)
        assert shown["top_channel"] == int(np.argmax(shown["means"]))
        assert shown["shape"] == list(maps[name][0].shape)


@pytest.mark.slow
def test_run_section_ranks_the_planted_channel_first_and_places_the_image(page):
    conv5 = next(r for r in page["numbers"]["run"] if r["layer"] == "conv5_3")
    assert conv5["class"] == "dog" and conv5["channels"][0]["channel"] == PLANTED
    assert len(conv5["channels"]) == 3
    means = np.array(page["numbers"]["layers"]["conv5_3"]["means"])
    run_values = pd.read_parquet(page["run"] / "activations" / "conv5_3")
    for ch in conv5["channels"]:
        assert ch["value"] == pytest.approx(means[ch["channel"]])
        column = run_values[channel_column(ch["channel"])].to_numpy()
        assert ch["percentile"] == pytest.approx(stats.percentileofscore(column, ch["value"], kind="mean"))
        assert (page["dir"] / f"run_conv5_3_c{ch['channel']}.png").is_file()
    # the synthetic run used the same random weights id, so no caution about mismatched weights
    assert "Caution: the run used weights" not in page["html"]


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]


@pytest.mark.slow
def test_page_references_only_files_it_has_and_escapes_names(page):
    parser = _Refs()
    parser.feed(page["html"])
    files = [r for r in parser.refs if not r.startswith("#")]
    assert files and all((page["dir"] / r).is_file() for r in files), files
    assert {"view.png", "conv_rgb.png", "features_conv5_3.png", "overlay_conv1_2.png", "inspect.json"} <= set(files)
    assert "http://" not in page["html"].lower() and "https://" not in page["html"].lower()
    assert "<img src=x" not in page["html"] and "&lt;img src=x onerror=alert(1)&gt;" in page["html"]
    assert "Random weights" in page["html"]


class _Sections(html.parser.HTMLParser):
    """Each <section>'s id and <h2> text, the nav's link texts, and how many sections precede the <footer>."""

    def __init__(self):
        super().__init__()
        self.ids, self.titles, self.nav, self.footer_after, self._in = [], [], [], -1, None

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.ids.append(dict(attrs)["id"])
        elif tag == "footer":
            self.footer_after = len(self.ids)
        elif tag == "h2":
            self.titles.append("")
        elif tag == "a" and self._in == "nav":
            self.nav.append("")
        self._in = {"h2": "h2", "nav": "nav"}.get(tag, self._in)

    def handle_endtag(self, tag):
        self._in = None if tag in ("h2", "nav") else self._in

    def handle_data(self, data):
        if self._in == "h2" or (self._in == "nav" and self.nav):
            (self.titles if self._in == "h2" else self.nav)[-1] += data


@pytest.mark.slow
def test_page_answers_first_then_walks_through_with_consecutive_step_numbers(page):
    parser = _Sections()
    parser.feed(page["html"])
    ids, titles = parser.ids, parser.titles
    layers = [i for i, a in enumerate(ids) if a.startswith("layer-")]
    # The answer, then its Grad-CAM, before anything of the walkthrough; the walkthrough in the article's order.
    assert ids[:2] == ["answer", "gradcam"]
    assert ids.index("gradcam") < layers[0]
    assert ids.index("image") < ids.index("convolution") < layers[0]
    assert [ids[i] for i in layers] == [f"layer-{name}" for name in LAYERS]  # network order
    assert layers[-1] < ids.index("softmax") < ids.index("run") < ids.index("numbers") == len(ids) - 1
    # Step numbers 1, 2, 3... in the order shown, in the headings and in the nav alike.
    numbers = [int(t.split(".", 1)[0]) for t in titles]
    assert numbers == list(range(1, len(ids) + 1))
    assert parser.nav == titles
    # The first section names the predicted class and its probability; the facts come after every section.
    n = page["numbers"]
    assert titles[0].endswith(n["predicted"])
    assert f"probability {max(n['probabilities']):.4f}" in page["html"]
    assert parser.footer_after == len(ids)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt install chromium)")
def test_gradcam_is_on_the_first_screen(page):
    from benchmarks.browser import open_in_playwright  # noqa: PLC0415  (playwright: a dev dependency)

    with open_in_playwright(page["dir"] / "index.html") as (tab, problems):
        tab.set_viewport_size({"width": 1400, "height": 900})
        tab.wait_for_function("document.querySelector('img[src=\"gradcam.png\"]').complete")
        box = tab.evaluate(
            "(() => { const r = document.querySelector('img[src=\"gradcam.png\"]').getBoundingClientRect();"
            " return [r.top, r.bottom, r.height, scrollY]; })()"
        )
        first_map = tab.evaluate("document.querySelector('section[id^=\"layer-\"]').getBoundingClientRect().top")
    top, bottom, height, scrolled = box
    assert scrolled == 0 and height > 200 and 0 < top and bottom <= 900, box
    assert first_map > 900  # the walkthrough's feature maps start below the first screen
    assert problems == []


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt install chromium)")
def test_page_opens_in_headless_chromium_without_console_errors(page, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2400",
        "--enable-logging=stderr",
        "--v=0",
        (page["dir"] / "index.html").as_uri(),
    ]
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]  # console.* and CSP reports
    assert shot.is_file(), proc.stderr[-2000:]
    assert console == []
    pixels = read_png(shot).astype(np.float32)
    assert pixels.std() > 10  # text and figures, not a blank page


@pytest.mark.slow
def test_two_images_of_one_name_in_two_folders_get_a_page_each(tmp_path, dog_model, monkeypatch, caplog):
    """PetImages has 2.jpg in Cat/ and in Dog/: the second page must not replace the first."""
    monkeypatch.setattr(inspect_job, "load_chosen_model", lambda *a, **k: dog_model)
    cat, dog = (write_image(tmp_path / "PetImages" / f / "2.jpg", seed=k) for k, f in enumerate(("Cat", "Dog")))
    pages = []
    for image in (cat, dog):
        caplog.clear()
        with caplog.at_level("INFO", logger="cnn_blackbox"):
            assert run_inspect(image, tmp_path / "out") == 0
        pages.append(tmp_path / "out" / "inspect" / inspect_job.make_page_name(str(image)) / "index.html")
        assert any(str(pages[-1].resolve()) in r.getMessage() for r in caplog.records)  # says where
    assert pages[0] != pages[1] and all(p.is_file() for p in pages)
    assert sorted(p.name for p in (tmp_path / "out" / "inspect").iterdir()) == sorted(p.parent.name for p in pages)
    numbers = [json.loads((p.parent / "inspect.json").read_text()) for p in pages]
    assert numbers[0] != numbers[1]  # each page its own image
