"""--decode gpu on the CPU device (the same code path: torchvision's decode_jpeg, torch's resize): its crops against
the CPU path's (PIL) within 3 grey levels and 0.5 on average on real photos and planted JPEGs; every file it
cannot take, and every failure, gives the CPU path's row; the draft pHash within 2 bits of the full decode's."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from analysis.config import ConfigError
from analysis.data import device_decode
from analysis.data.dataset import ImageDataset, collate_images
from analysis.data.decoding import DecodeError, decode_image
from analysis.data.device_decode import DeviceDecoder, orient, probe
from analysis.data.jpeg_bytes import JpegBytesDataset
from analysis.data.perceptual_hash import compute_phash
from analysis.data.preprocessing import make_preprocessing
from analysis.data.sources import ImageRecord
from jobs.runtime import pick_decode

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-photos" / "PetImages"
needs_photos = pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"the real photos are not here ({PHOTOS})")
MAX = 10**9
CPU = torch.device("cpu")
PREPROCESSINGS = [("imagenet", 64), ("imagenet", 224), ("classification-pytorch", 64), ("classification-pytorch", 224)]
ROWS = ("ok", "errors", "widths", "heights", "formats", "sha256s")


def photos() -> list[bytes]:
    return [p.read_bytes() for p in sorted(PHOTOS.rglob("*")) if p.is_file()]


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth colour fields, fine noise and a sharp-edged red square (chroma subsampling's hardest case)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    pixels = np.asarray(coarse, np.float32) + rng.normal(0, 12, (h, w, 3))
    pixels[h // 3 : h // 2, w // 4 : w // 2] = (230, 20, 30)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **{"quality": 90, **kw})
    return buf.getvalue()


def planted() -> dict[str, bytes]:
    files = {
        "4:2:0 odd": jpeg(picture(301, 203, 1), subsampling=2),
        "4:4:4 odd": jpeg(picture(203, 301, 2), subsampling=0),
        "4:2:2": jpeg(picture(333, 250, 3), subsampling=1),
        "progressive": jpeg(picture(640, 427, 4), progressive=True),
        "grey": jpeg(picture(257, 129, 5).convert("L")),
        "large": jpeg(picture(1800, 1300, 6), quality=80),
    }
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        files[f"orientation {o}"] = jpeg(picture(180, 120, 10 + o), exif=exif)
    return files


def load(dataset_type, datas: list[bytes], preprocessing) -> tuple[list, object]:
    ds = dataset_type([], preprocessing, MAX, MAX)
    items = [ds.make_item(i, d) for i, d in enumerate(datas)]
    return items, collate_images(items)


def both_paths(datas: list[bytes], preprocessing):
    """(the CPU path's batch, the device path's batch after the device step, the device path's items)."""
    _, cpu = load(ImageDataset, datas, preprocessing)
    items, encoded = load(JpegBytesDataset, datas, preprocessing)
    return cpu, DeviceDecoder(preprocessing, CPU, MAX)(encoded), items


def assert_close(cpu, dev) -> tuple[int, float]:
    assert dev.images.shape == cpu.images.shape and dev.images.dtype == torch.uint8
    diff = (dev.images.int() - cpu.images.int()).abs()
    per_image = diff.float().mean(dim=(1, 2, 3))
    assert diff.max() <= 3 and per_image.max() <= 0.5, (diff.max(), per_image)
    return int(diff.max()), float(per_image.max())


@needs_photos
@pytest.mark.parametrize("name, size", PREPROCESSINGS)
def test_real_photos_decoded_by_the_device_path_match_the_cpu_path(name, size):
    preprocessing = make_preprocessing(name, size)
    cpu, dev, items = both_paths(photos(), preprocessing)
    assert len(items) == 20 and all(item.encoded is not None for item in items)  # all took the device path
    worst, mean = assert_close(cpu, dev)
    assert worst <= 1 and mean <= 0.2  # measured: 1 and 0.06-0.14
    for field in ROWS:
        assert getattr(dev, field) == getattr(cpu, field), field


@pytest.mark.parametrize("name, size", PREPROCESSINGS)
def test_planted_jpegs_every_orientation_grey_subsampling_and_odd_sizes_match(name, size):
    files = planted()
    cpu, dev, items = both_paths(list(files.values()), make_preprocessing(name, size))
    assert all(item.encoded is not None for item in items), [k for k, i in zip(files, items) if i.encoded is None]
    assert [item.orientation for item in items[-8:]] == list(range(1, 9))
    assert_close(cpu, dev)
    for field in ROWS:
        assert getattr(dev, field) == getattr(cpu, field), field


def test_orient_turns_an_image_as_pil_does_for_every_exif_orientation():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    methods = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270"}
    methods |= {7: "TRANSVERSE", 8: "ROTATE_90"}
    for o in range(1, 9):
        want = Image.fromarray(pixels)
        want = want.transpose(Image.Transpose[methods[o]]) if o in methods else want
        got = orient(torch.from_numpy(pixels).permute(2, 0, 1), o).permute(1, 2, 0).numpy()
        assert np.array_equal(got, np.asarray(want)), o


def cmyk_jpeg() -> bytes:
    return jpeg(picture(200, 150).convert("CMYK"))


def corrupt_jpeg() -> bytes:
    """The scan names a component the frame does not have: every decoder refuses it ('corrupt', not truncated)."""
    data = bytearray(jpeg(picture(300, 200, 7)))
    data[data.index(b"\xff\xda") + 5] = 9  # SOS: FF DA, length (2), count (1), then the first component's id
    return bytes(data)


def damaged_jpeg() -> bytes:
    """Bytes of the entropy-coded data overwritten: libjpeg warns and decodes garbage, in PIL and torchvision."""
    good = jpeg(picture(300, 200, 7))
    data = bytearray(good)
    rng = np.random.default_rng(3)
    for p in rng.integers(good.index(b"\xff\xda") + 20, len(good) - 10, 5):
        data[p] = rng.integers(0, 256)
    return bytes(data)


def bad_and_odd_files() -> dict[str, bytes]:
    good = jpeg(picture(300, 200, 8))
    png = io.BytesIO()
    picture(120, 90, 9).save(png, format="PNG")
    return {
        "good": good,
        "png": png.getvalue(),
        "truncated": good[: len(good) // 2],
        "corrupt": corrupt_jpeg(),
        "damaged": damaged_jpeg(),
        "cmyk": cmyk_jpeg(),
        "not an image": b"hello, this is not an image at all" * 20,
        "small jpeg": jpeg(picture(60, 40)),  # too small to draft: decoded whole by the check
        "thin jpeg": jpeg(picture(4000, 40)),  # Preprocessing.view's box path: the CPU path
    }


@pytest.mark.parametrize("name, size", [("imagenet", 64), ("classification-pytorch", 224)])
def test_files_the_device_path_cannot_take_get_the_cpu_paths_rows(name, size):
    files = bad_and_odd_files()
    cpu, dev, items = both_paths(list(files.values()), make_preprocessing(name, size))
    took = {k for k, item in zip(files, items) if item.encoded is not None}
    assert took == {"good", "small jpeg", "damaged"}
    assert dev.errors == cpu.errors == [None, None, "truncated", "corrupt", None, None, "not an image", None, None]
    for field in (*ROWS, "phashes"):
        assert getattr(dev, field) == getattr(cpu, field), field
    assert_close(cpu, dev)


def test_a_failure_on_the_device_falls_back_to_the_cpu_path_with_its_rows(monkeypatch):
    """The batched decode raises, then one JPEG fails alone and one decodes to another size: those two are the CPU
    path's, pixel for pixel; a JPEG that fails on the CPU too becomes that path's error row."""
    preprocessing = make_preprocessing("imagenet", 64)
    datas = [jpeg(picture(300, 200, s)) for s in range(4)]
    real = device_decode.decode_jpeg
    calls = []

    def flaky(data, **kw):
        calls.append(type(data))
        if isinstance(data, list):
            raise RuntimeError("planted: the batch fails")
        if torch.equal(data, torch.frombuffer(bytearray(datas[1]), dtype=torch.uint8)):
            raise RuntimeError("planted: one image fails")
        out = real(data, **kw)
        return out[:, :-1] if torch.equal(data, torch.frombuffer(bytearray(datas[2]), dtype=torch.uint8)) else out

    monkeypatch.setattr(device_decode, "decode_jpeg", flaky)
    _, cpu = load(ImageDataset, datas, preprocessing)
    _, encoded = load(JpegBytesDataset, datas, preprocessing)
    decoder = DeviceDecoder(preprocessing, CPU, MAX)
    dev = decoder(encoded)
    assert calls == [list] + [torch.Tensor] * 4 and decoder.fallbacks == 2
    assert torch.equal(dev.images[1:3], cpu.images[1:3])  # the CPU path's own crops
    assert dev.phashes == cpu.phashes and dev.encoded == [] and dev.encoded_at == []
    assert_close(cpu, dev)

    def fails(data, max_pixels, min_side=None):
        raise DecodeError("too large", 300, 200, "JPEG")

    monkeypatch.setattr(device_decode, "decode_image", fails)
    dev = DeviceDecoder(preprocessing, CPU, MAX)(encoded)
    assert dev.ok == [True, False, False, True] and dev.errors == [None, "too large", "too large", None]
    assert dev.phashes[1:3] == [None, None] and len(dev.images) == 2
    assert (dev.images.int() - cpu.images[[0, 3]].int()).abs().max() <= 3  # the device's crops of the other two


def test_a_batch_through_worker_processes_carries_the_bytes_and_decodes_the_same(tmp_path):
    files = bad_and_odd_files()
    records = []
    for k, data in enumerate(files.values()):
        (tmp_path / f"{k}.jpg").write_bytes(data)
        records.append(ImageRecord(image_id=f"{k}.jpg", split=None, label=None, path=str(tmp_path / f"{k}.jpg")))
    preprocessing = make_preprocessing("imagenet", 64)
    ds = JpegBytesDataset(records, preprocessing, MAX, MAX, str(tmp_path))
    decoder = DeviceDecoder(preprocessing, CPU, MAX)
    kw = dict(batch_size=4, collate_fn=collate_images)
    single = [decoder(b) for b in DataLoader(ds, num_workers=0, **kw)]
    multi = [decoder(b) for b in DataLoader(ds, num_workers=2, **kw)]
    for a, b in zip(single, multi, strict=True):
        assert torch.equal(a.images, b.images) and (a.errors, a.sha256s, a.phashes) == (b.errors, b.sha256s, b.phashes)
    assert sum(len(b.images) for b in multi) == 6


@needs_photos
def test_the_draft_phash_is_within_two_bits_of_the_full_decodes_on_photos_and_their_copies():
    """DRAFT_SIDE's measured limit (analysis/data/jpeg_bytes.py), on the photos and copies resized to 0.15-0.6x."""
    distances = []
    for data in photos():
        full_image = decode_image(data, MAX).image
        for scale in (1.0, 0.6, 0.3, 0.15):
            copy = data if scale == 1.0 else jpeg(full_image.resize([round(s * scale) for s in full_image.size]))
            full = compute_phash(decode_image(copy, MAX).image)
            (item,) = load(JpegBytesDataset, [copy], make_preprocessing("imagenet", 64))[0]
            distances.append(bin((full ^ item.phash) & (2**64 - 1)).count("1"))
    assert max(distances) <= 2, np.bincount(distances)


def test_pick_decode_and_the_probe():
    preprocessing = make_preprocessing("imagenet", 64)
    assert probe(CPU) is None
    assert pick_decode("cpu", CPU, preprocessing)[0] == "cpu"
    assert pick_decode("auto", CPU, preprocessing)[0] == "cpu"
    decode, why = pick_decode("gpu", CPU, preprocessing)
    assert decode == "gpu" and "main process" in why
    with pytest.raises(ConfigError, match="decode: gpu, but the device is meta"):
        pick_decode("gpu", torch.device("meta"), preprocessing)
    assert pick_decode("auto", torch.device("meta"), preprocessing)[0] == "cpu"


def test_pin_memory_keeps_the_jpeg_bytes_beside_the_pinned_crops(monkeypatch):
    files = bad_and_odd_files()
    _, batch = load(JpegBytesDataset, list(files.values()), make_preprocessing("imagenet", 64))
    pinned = torch.ones(1, 3, 64, 64, dtype=torch.uint8)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: pinned)  # CPU-only stand-in
    out = batch.pin_memory()
    assert out.images is pinned and out.encoded is batch.encoded and out.encoded_at == batch.encoded_at == [0, 4, 7]
    assert out.orientations == batch.orientations and (out.ok, out.errors) == (batch.ok, batch.errors)


def test_resize_crops_keeps_the_order_whatever_the_groups(monkeypatch):
    """Same-sized images are resized together, in groups cut at GROUP_VALUES: each crop is its image's alone."""
    preprocessing = make_preprocessing("imagenet", 64)
    sizes = [(120, 90), (90, 120), (120, 90), (77, 101), (120, 90)]
    images = [torch.from_numpy(np.asarray(picture(w, h, k))).permute(2, 0, 1) for k, (w, h) in enumerate(sizes)]
    alone = torch.cat([device_decode.resize_crops([image], preprocessing) for image in images])
    assert torch.equal(device_decode.resize_crops(images, preprocessing), alone)
    monkeypatch.setattr(device_decode, "GROUP_VALUES", 2 * 3 * 120 * 90)  # groups of 2
    assert torch.equal(device_decode.resize_crops(images, preprocessing), alone)
