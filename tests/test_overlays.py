"""Overlays: upsampling keeps the map's peak where it was, colours follow the given scale, blending is exact."""

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reports.overlays import blend, colorize, make_overlay, upsample_map


@pytest.mark.parametrize("peak", [(0, 0), (0, 6), (3, 4), (6, 6)])
def test_upsampled_peak_lands_on_the_maps_peak(peak):
    fmap = np.zeros((7, 7), np.float32)
    fmap[peak] = 1.0
    up = upsample_map(fmap, (224, 224))
    assert up.shape == (224, 224) and up.dtype == np.float32
    y, x = np.unravel_index(np.argmax(up), up.shape)
    cell = 224 / 7
    assert int(y // cell) == peak[0] and int(x // cell) == peak[1]


def test_upsample_matches_torch_and_non_square():
    fmap = np.random.default_rng(0).random((4, 6)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(fmap)[None, None], size=(20, 30), mode="bilinear", align_corners=False)[
        0, 0
    ].numpy()
    np.testing.assert_array_equal(upsample_map(fmap, (20, 30)), expected)
    with pytest.raises(ValueError, match="2-D"):
        upsample_map(np.zeros((1, 4, 4)), (8, 8))


def test_colorize_uses_the_given_scale():
    values = np.array([[-1.0, 0.0, 5.0, 10.0, 20.0]], np.float32)
    rgb = colorize(values, 0.0, 10.0, "viridis")
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
    cmap = matplotlib.colormaps["viridis"]
    np.testing.assert_array_equal(rgb[0, 0], cmap(0.0, bytes=True)[:3])  # clipped low
    np.testing.assert_array_equal(rgb[0, 2], cmap(0.5, bytes=True)[:3])
    np.testing.assert_array_equal(rgb[0, 4], cmap(1.0, bytes=True)[:3])  # clipped high
    flat = colorize(np.full((2, 2), 3.0), 3.0, 3.0)  # no range: the low colour, no division by zero
    np.testing.assert_array_equal(flat, np.broadcast_to(matplotlib.colormaps["jet"](0.0, bytes=True)[:3], (2, 2, 3)))
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        colorize(values, 0, 1, "nope")
    with pytest.raises(ValueError, match="vmin <= vmax"):
        colorize(values, 2, 1)


def test_blend_and_overlay():
    image = np.full((4, 4, 3), 200, np.uint8)
    heat = np.zeros((4, 4, 3), np.uint8)
    np.testing.assert_array_equal(blend(image, heat, 0.0), image)
    np.testing.assert_array_equal(blend(image, heat, 1.0), heat)
    np.testing.assert_array_equal(blend(image, heat, 0.25), np.full((4, 4, 3), 150, np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        blend(image, heat, 1.5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        blend(image, heat[..., :2], 0.5)
    image = np.zeros((32, 48, 3), np.uint8)
    fmap = np.zeros((2, 3), np.float32)
    fmap[1, 2] = 4.0
    out = make_overlay(image, fmap, 0.0, 4.0, alpha=1.0)
    assert out.shape == (32, 48, 3) and out.dtype == np.uint8
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_array_equal(out[31, 47], jet(1.0, bytes=True)[:3])  # bottom-right cell is hottest
    np.testing.assert_array_equal(out[0, 0], jet(0.0, bytes=True)[:3])
