"""The single-convolution demo against torch.nn.functional.conv2d, and named kernels doing what they say."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from analysis.walkthrough.convolution import (
    KERNEL_NAMES,
    compute_convolution,
    compute_display_rgb,
    image_to_unit,
    make_conv2d,
    make_kernel,
)


def _image(seed=0, size=(20, 28)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_equals_functional_conv2d(name):
    image = _image()
    kernel = make_kernel(name, seed=3)
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255  # (1, 3, H, W)
    expected = F.conv2d(x, torch.from_numpy(kernel.weight), torch.from_numpy(kernel.bias), stride=1, padding=1)
    out = compute_convolution(image, kernel)
    assert out.shape == (3, 20, 28) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected[0].numpy(), rtol=1e-5, atol=1e-6)
    conv = make_conv2d(kernel)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (
        3,
        3,
        (3, 3),
        (1, 1),
        (1, 1),
    )


def test_random_kernel_is_seeded():
    a, b, c = make_kernel("random", 7), make_kernel("random", 7), make_kernel("random", 8)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weight, c.weight)
    assert a.weight.shape == (3, 3, 3, 3) and np.abs(a.weight).max() <= 1 / np.sqrt(27)


@pytest.mark.parametrize("name", ["edge", "sobel"])
def test_edge_kernel_lights_up_only_at_the_edge(name):
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 255  # black left half, white right half: one vertical edge between columns 7 and 8
    out = np.abs(compute_convolution(image, make_kernel(name)))  # (3, H, W)
    # Zero padding makes the white half's border an edge too, so look inside the 1-pixel frame.
    inner = out[:, 1:-1, 1:-1].max(axis=0)  # (H-2, W-2); column j here is image column j + 1
    lit = np.flatnonzero(inner.max(axis=0) > 1e-6) + 1
    assert set(lit) == {7, 8}
    assert inner.max() > 0.5


def test_identity_and_blur_and_display():
    image = _image(1)
    out = compute_convolution(image, make_kernel("identity"))
    np.testing.assert_allclose(out, image_to_unit(image), atol=1e-6)
    flat = np.full((6, 6, 3), 90, np.uint8)
    blurred = compute_convolution(flat, make_kernel("blur"))
    np.testing.assert_allclose(blurred[:, 1:-1, 1:-1], 90 / 255, atol=1e-6)
    rgb = compute_display_rgb(np.stack([np.zeros((2, 2)), np.ones((2, 2)), np.full((2, 2), 0.5)]).astype(np.float32))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (0, 255, 128)


def test_unknown_kernel_lists_valid_ones():
    with pytest.raises(ValueError, match="valid kernels: random, edge, sobel, blur, sharpen, identity"):
        make_kernel("emboss")
