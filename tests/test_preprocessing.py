"""Preprocessing against independent references: torchvision's own VGG16 transform, and a numpy rendering of the
classification-pytorch recipe."""

import json

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.models import VGG16_Weights

from analysis.config import PREPROCESS_NAMES
from analysis.data import preprocessing as pp
from analysis.data.preprocessing import make_preprocessing


def random_rgb(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# Landscape, portrait, square, smaller than the crop (upscaled), and shapes whose crop offset is k + 0.5.
SHAPES = [(90, 70), (50, 81), (64, 64), (30, 40), (64, 105), (105, 64)]


@pytest.mark.parametrize("w, h", [(300, 230), (230, 300), (150, 100)])
def test_imagenet_at_224_is_torchvision_vgg16_transform_exactly(w, h):
    img = random_rgb(w, h)
    expected = VGG16_Weights.IMAGENET1K_V1.transforms()(img)
    got = make_preprocessing("imagenet", 224).transform(img)
    assert got.dtype == torch.float32 and got.shape == (3, 224, 224)
    assert torch.equal(got, expected)


def test_imagenet_resize_scales_with_the_crop():
    p = make_preprocessing("imagenet", 64)
    assert (p.resize, p.crop) == (73, 64)  # round(256 / 224 * 64)
    assert make_preprocessing("imagenet", 224).resize == 256
    reference = VGG16_Weights.IMAGENET1K_V1.transforms()
    assert list(p.mean) == list(reference.mean) and list(p.std) == list(reference.std)
    assert p.interpolation == "bilinear"


@pytest.mark.parametrize("w, h", SHAPES)
def test_imagenet_at_64_is_torchvision_resize_crop_normalize(w, h):
    img = random_rgb(w, h, seed=w * h)
    r = VGG16_Weights.IMAGENET1K_V1.transforms()
    x = TF.center_crop(TF.resize(img, [73]), [64])
    expected = TF.normalize(TF.to_tensor(x), r.mean, r.std)
    assert torch.allclose(make_preprocessing("imagenet", 64).transform(img), expected, atol=1e-6, rtol=0)


def classification_pytorch_recipe(img: Image.Image, n: int) -> np.ndarray:
    """bubbliiiing/classification-pytorch letterbox_image=False, written out with PIL and numpy: (3, n, n)."""
    w, h = img.size
    if (w <= h and w == n) or (h <= w and h == n):
        resized = img
    elif w < h:
        resized = img.resize((n, int(n * h / w)), Image.BILINEAR)
    else:
        resized = img.resize((int(n * w / h), n), Image.BILINEAR)
    a = np.array(resized, np.float32)  # (H, W, 3)
    top = int(round((a.shape[0] - n) / 2.0))
    left = int(round((a.shape[1] - n) / 2.0))
    a = a[top : top + n, left : left + n]
    a /= 127.5
    a -= 1.0
    return a.transpose(2, 0, 1)


@pytest.mark.parametrize("w, h", SHAPES)
def test_classification_pytorch_matches_its_recipe(w, h):
    img = random_rgb(w, h, seed=w + h)
    got = make_preprocessing("classification-pytorch", 64).transform(img).numpy()
    expected = classification_pytorch_recipe(img, 64)
    assert got.shape == (3, 64, 64) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-6
    assert got.min() >= -1.0 and got.max() <= 1.0


@pytest.mark.parametrize("name", PREPROCESS_NAMES)
def test_view_is_what_the_tensor_shows(name):
    img = random_rgb(90, 70)
    p = make_preprocessing(name, 64)
    view = p.view(img)
    assert view.mode == "RGB" and view.size == (64, 64)
    x = p.transform(img)  # (3, 64, 64)
    mean = torch.tensor(p.mean).view(3, 1, 1)
    std = torch.tensor(p.std).view(3, 1, 1)
    unnormalized = (x * std + mean) * 255  # back to 0..255
    assert torch.allclose(unnormalized, torch.from_numpy(np.array(view)).permute(2, 0, 1).float(), atol=1e-3)


def test_imagenet_view_at_224_is_resize_256_center_crop_224():
    img = random_rgb(300, 230)
    expected = TF.center_crop(TF.resize(img, [256]), [224])
    assert np.array_equal(np.asarray(make_preprocessing("imagenet", 224).view(img)), np.asarray(expected))


def test_very_thin_image_resamples_only_the_kept_window():
    img = random_rgb(4, 400)  # resized 73 x 7300: far more than the crop
    p = make_preprocessing("imagenet", 64)
    assert 73 * 7300 > pp._MAX_RESIZED_CROPS * 64 * 64  # so the windowed path is the one under test
    full = np.asarray(TF.center_crop(TF.resize(img, [73]), [64])).astype(int)
    got = np.asarray(p.view(img)).astype(int)
    assert got.shape == (64, 64, 3)
    # PIL reads the window's box in single precision: a level of rounding apart, never more.
    assert np.abs(got - full).max() <= 1 and np.abs(got - full).mean() < 0.5


def test_describe_is_json_and_names_the_recipe():
    for name in PREPROCESS_NAMES:
        d = make_preprocessing(name, 64).describe()
        assert json.loads(json.dumps(d))["name"] == name
        assert d["crop"] == 64
    assert make_preprocessing("classification-pytorch", 64).describe()["mean"] == [0.5, 0.5, 0.5]


def test_every_configured_name_builds_and_unknown_names_are_refused():
    assert {make_preprocessing(n, 32).name for n in PREPROCESS_NAMES} == set(PREPROCESS_NAMES)
    with pytest.raises(ValueError, match="imagenet, classification-pytorch"):
        make_preprocessing("caffe", 224)


def test_non_rgb_input_is_refused():
    with pytest.raises(ValueError, match="'L'"):
        make_preprocessing("imagenet", 64).transform(Image.new("L", (64, 64)))


@pytest.mark.parametrize("name", PREPROCESS_NAMES)
def test_batch_normalize_on_uint8_is_torchvision_per_image_bit_for_bit(name):
    """The job carries uint8 to the device and normalizes a whole channels_last batch there: every value of every
    channel must come out as torchvision's per-image convert_image_dtype + normalize gives it."""
    p = make_preprocessing(name, 16)
    values = torch.arange(256, dtype=torch.uint8).view(16, 16)  # every uint8 value, in each channel
    images = torch.stack([values.roll(k, dims=0).expand(3, 16, 16) for k in range(4)])  # (4, 3, 16, 16)
    expected = torch.stack(
        [TF.normalize(TF.convert_image_dtype(im, torch.float), list(p.mean), list(p.std)) for im in images]
    )
    got = p.normalize(images.contiguous(memory_format=torch.channels_last))
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, expected)
    assert torch.equal(
        p.transform(random_rgb(20, 20)),
        TF.normalize(TF.convert_image_dtype(p.to_uint8(random_rgb(20, 20)), torch.float), list(p.mean), list(p.std)),
    )


def test_normalize_refuses_float_input():
    with pytest.raises(TypeError, match="uint8"):
        make_preprocessing("imagenet", 16).normalize(torch.zeros(1, 3, 16, 16))
