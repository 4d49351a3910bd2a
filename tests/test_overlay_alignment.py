"""Overlays line up with the pixels: a bright patch in a known corner, a VGG16 whose channel 0 passes brightness
through every layer, and the overlay's hottest point must land in that corner of the tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.data.preprocessing import make_preprocessing
from analysis.model.vgg16 import LoadedModel, make_vgg16
from analysis.stats.recompute import RunModel, check_means, compute_shown_maps
from analysis.store.run import RunImages
from reports.run import gallery


def brightness_vgg16() -> torch.nn.Module:
    """Every conv: channel 0 out = channel 0 in (conv1_1: the mean of R, G, B) at the centre tap; all else zero."""
    model = make_vgg16(1000).eval()
    with torch.no_grad():
        for m in model.features:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
                if m.in_channels == 3:
                    m.weight[0, :, 1, 1] = 1.0 / 3
                else:
                    m.weight[0, 0, 1, 1] = 1.0
    return model


def write_patch_image(path, size, box, level=255) -> None:
    """A dark image (w, h) with a bright rectangle box = (left, top, right, bottom)."""
    pixels = np.full((size[1], size[0], 3), 20, np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = level
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def model():
    return brightness_vgg16()  # built once: VGG16's initialisation takes seconds


@pytest.fixture
def run_model(tmp_path, model):
    loaded = LoadedModel(
        model=model,
        classes=("cat", "dog"),
        head="imagenet",
        weights_id="test",
        weights_path=None,
        weights_sha256=None,
        class_map=(("cat", 281, 285), ("dog", 151, 268)),
        imagenet_categories=None,
        random=False,
    )
    data = tmp_path / "data"
    data.mkdir()
    return RunModel(loaded, make_preprocessing("imagenet", 64), RunImages(str(data), 10**8, 10**8), ())


def hottest(tile: np.ndarray) -> tuple[int, int]:
    """(row, col) of the most red-not-blue pixel: the top of the jet colormap."""
    heat = tile[..., 0].astype(int) - tile[..., 2].astype(int)
    return np.unravel_index(np.argmax(heat), heat.shape)


@pytest.mark.parametrize("corner", ["top-left", "bottom-right"])
def test_overlay_peak_lands_on_the_bright_corner(run_model, corner):
    # 120 x 90: the short side is resized to 73 (64 * 256/224) and the crop keeps the middle 64 x 64, which is
    # x in [~17, ~103) of the original; the patch sits inside the crop, in its `corner` quarter.
    box = (20, 2, 45, 27) if corner == "top-left" else (75, 62, 100, 88)
    data = run_model.images.data
    write_patch_image(f"{data}/cat.1.png", (120, 90), box)
    write_patch_image(f"{data}/dog.2.png", (120, 90), box, level=120)  # the same place, dimmer
    needs = {"cat.1.png": {"conv5_3": {0}, "conv4_3": {0}}, "dog.2.png": {"conv5_3": {0}}}
    shown = compute_shown_maps(run_model, needs, torch.device("cpu"), "fp32", batch_size=4, thumbnail=96)
    assert [s.error for s in shown] == [None, None]
    scales = gallery.compute_channel_scales(shown)
    tiles = gallery.make_tiles(shown, scales, "jet", 0.5)
    for layer in ("conv5_3", "conv4_3"):
        row, col = hottest(tiles[("cat.1.png", layer, 0)])
        half = 96 // 2
        assert (row < half and col < half) if corner == "top-left" else (row >= half and col >= half), (layer, row, col)
    # one colour scale per channel: the dimmer patch is drawn less hot than the bright one, not rescaled to the top
    bright = tiles[("cat.1.png", "conv5_3", 0)]
    dim = tiles[("dog.2.png", "conv5_3", 0)]
    assert (bright[..., 0].astype(int) - bright[..., 2]).max() > (dim[..., 0].astype(int) - dim[..., 2]).max() + 50
    assert scales[("conv5_3", 0)][1] == pytest.approx(float(shown[0].maps["conv5_3"][0].max()))

    # the recorded-vs-recomputed check: equal values pass, a changed one is reported
    mean = float(shown[0].maps["conv5_3"][0].mean())
    assert check_means(shown, {("cat.1.png", "conv5_3", 0): mean}, "fp32") == []
    bad = check_means(shown, {("cat.1.png", "conv5_3", 0): mean * 1.5 + 1}, "fp32")
    assert [(b["image_id"], b["layer"], b["channel"]) for b in bad] == [("cat.1.png", "conv5_3", 0)]


def test_missing_and_unreadable_images_get_a_reason(run_model):
    (open(f"{run_model.images.data}/cat.3.jpg", "wb")).write(b"not an image")
    write_patch_image(f"{run_model.images.data}/cat.4.png", (64, 64), (0, 0, 10, 10))
    needs = {"cat.3.jpg": {"conv5_3": {0}}, "gone.jpg": {"conv5_3": {0}}, "cat.4.png": {"conv5_3": {0}}}
    shown = compute_shown_maps(run_model, needs, torch.device("cpu"), "fp32", batch_size=2, thumbnail=32)
    assert [s.image_id for s in shown] == ["cat.3.jpg", "gone.jpg", "cat.4.png"]
    assert "cannot be read" in shown[0].error and "not found" in shown[1].error and shown[2].error is None
    assert shown[2].view.shape == (32, 32, 3)
