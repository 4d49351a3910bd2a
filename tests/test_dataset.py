"""ImageDataset + collate_images: every file keeps its place and its own result; workers read zips by themselves."""

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from analysis.data.dataset import Batch, ImageDataset, Item, collate_images
from analysis.data.preprocessing import make_preprocessing
from analysis.data.sources import ImageRecord

N = 64
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 50, 210), (240, 240, 30), (20, 20, 20)]


def encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def flat(colour, w: int = 80, h: int = 64) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def record(path, member=None) -> ImageRecord:
    return ImageRecord(image_id=str(member or path.name), split=None, label=None, path=str(path), member=member)


def expected_tensor(colour) -> torch.Tensor:
    """What a flat image of `colour` becomes, computed from the normalization formula, not the module."""
    p = make_preprocessing("classification-pytorch", N)
    return (torch.tensor(colour, dtype=torch.float32) / 255 - torch.tensor(p.mean)) / torch.tensor(p.std)


def write_mixed_folder(tmp_path):
    """Good and bad files interleaved; returns (records, expected (error or colour) per record)."""
    files = [
        ("a.jpg", encode(flat(COLOURS[0]), "PNG"), COLOURS[0]),  # a PNG named .jpg: fine
        ("b.jpg", b"", "empty file"),
        ("c.png", encode(flat(COLOURS[1]), "PNG"), COLOURS[1]),
        ("d.jpg", encode(flat(COLOURS[2]), "JPEG")[:300], "truncated"),
        ("e.jpg", np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(), "not an image"),
        ("f.png", encode(flat(COLOURS[3], 200, 200), "PNG"), "too large"),  # 40000 pixels > max_pixels
        ("g.png", encode(flat(COLOURS[4]), "PNG"), COLOURS[4]),
    ]
    records = []
    for name, data, _ in files:
        (tmp_path / name).write_bytes(data)
        records.append(record(tmp_path / name))
    records.append(record(tmp_path / "missing.jpg"))  # vanished after discovery
    expected = [e for _, _, e in files] + ["vanished"]
    return records, expected


def test_bad_files_keep_their_place_and_good_files_their_own_pixels(tmp_path):
    records, expected = write_mixed_folder(tmp_path)
    ds = ImageDataset(
        records, make_preprocessing("classification-pytorch", N), max_pixels=10_000, max_file_bytes=1_000_000
    )
    batch = collate_images([ds[i] for i in range(len(ds))])

    assert batch.indices == list(range(len(records)))
    assert batch.ok == [isinstance(e, tuple) for e in expected]
    for error, want in zip(batch.errors, expected):
        if isinstance(want, tuple):
            assert error is None
        else:
            assert error is not None and error.startswith(want), (error, want)
    good_colours = [e for e in expected if isinstance(e, tuple)]
    assert batch.images.shape == (len(good_colours), 3, N, N) and batch.images.dtype == torch.uint8
    for image, colour in zip(ds.preprocessing.normalize(batch.images), good_colours):  # in order, none substituted
        assert torch.allclose(image.mean(dim=(1, 2)), expected_tensor(colour), atol=0.02)
    assert batch.widths[:3] == [80, None, 80] and batch.heights[0] == 64
    assert batch.formats[0] == "PNG" and batch.formats[1] is None
    assert (batch.widths[5], batch.heights[5]) == (200, 200)  # size of a refused image is still known


def test_file_over_max_file_bytes_is_refused_before_decoding(tmp_path):
    (tmp_path / "a.png").write_bytes(encode(flat(COLOURS[0]), "PNG"))
    item = ImageDataset(
        [record(tmp_path / "a.png")], make_preprocessing("imagenet", N), max_pixels=10**6, max_file_bytes=10
    )[0]
    assert (item.image, item.error, item.index) == (None, "too large", 0)


def test_batch_without_good_items_has_an_empty_image_tensor():
    items = [
        Item(index=3, image=None, error="empty file", width=None, height=None, format=None),
        Item(index=4, image=None, error="truncated", width=10, height=20, format="JPEG"),
    ]
    batch = collate_images(items)
    assert batch.images.shape == (0, 3, 0, 0) and len(batch.images) == 0 and batch.images.dtype == torch.uint8
    assert batch.indices == [3, 4] and batch.ok == [False, False] and batch.errors == ["empty file", "truncated"]
    assert batch.widths == [None, 10] and batch.formats == [None, "JPEG"]


def write_zip(tmp_path):
    path = tmp_path / "train.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for k in range(7):
            rng = np.random.default_rng(k)
            im = Image.fromarray(rng.integers(0, 256, (48 + k, 70, 3), dtype=np.uint8))
            zf.writestr(f"train/img{k}.png", encode(im, "PNG"))
        zf.writestr("train/broken.jpg", encode(flat(COLOURS[0]), "JPEG")[:200])
    members = sorted(zipfile.ZipFile(path).namelist())
    return [record(path, m) for m in members]


def run_loader(ds, workers: int, **kw) -> list[Batch]:
    loader = DataLoader(ds, batch_size=3, shuffle=False, num_workers=workers, collate_fn=collate_images, **kw)
    return list(loader)


def test_dataloader_with_workers_over_a_zip_gives_what_one_process_gives(tmp_path):
    records = write_zip(tmp_path)
    ds = ImageDataset(records, make_preprocessing("imagenet", N), max_pixels=10**6, max_file_bytes=10**6, threads=2)
    single = run_loader(ds, 0)  # opens the zip (and the thread pool) here first: forked workers make their own
    multi = run_loader(ds, 2)
    assert [b.indices for b in multi] == [b.indices for b in single] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert sum(sum(b.ok) for b in multi) == 7
    assert [e for b in multi for e in b.errors] == ["truncated"] + [None] * 7  # broken.jpg sorts first
    for a, b in zip(single, multi):
        assert torch.equal(a.images, b.images)
        assert (a.ok, a.errors, a.widths, a.heights, a.formats) == (b.ok, b.errors, b.widths, b.heights, b.formats)
    first = Image.open(zipfile.ZipFile(records[1].path).open(records[1].member)).convert("RGB")
    assert torch.equal(single[0].images[0], ds.preprocessing.to_uint8(first))  # member 1 is the first good one


def test_pin_memory_pins_the_images_and_keeps_everything_else(monkeypatch):
    batch = collate_images(
        [Item(0, torch.zeros(3, 4, 4, dtype=torch.uint8), None, 4, 4, "PNG"), Item(1, None, "truncated", 1, 1, None)]
    )
    pinned_marker = torch.ones(1, 3, 4, 4)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: pinned_marker)  # CPU-only stand-in
    out = batch.pin_memory()
    assert isinstance(out, Batch) and out.images is pinned_marker
    assert (out.indices, out.ok, out.errors, out.widths, out.formats) == (
        batch.indices,
        batch.ok,
        batch.errors,
        batch.widths,
        batch.formats,
    )


@pytest.mark.parametrize("zipped", [False, True], ids=["folder", "zip"])
def test_a_batch_loaded_on_threads_is_the_batch_loaded_item_by_item(tmp_path, zipped):
    """__getitems__ (what a DataLoader calls with a batch) on 3 threads: every item in its place, good or bad,
    equal to __getitem__'s, however the threads finish; a zip's members read by several threads at once."""
    if zipped:
        records = write_zip(tmp_path) * 3
    else:
        records, _ = write_mixed_folder(tmp_path)
        records = records * 3
    kw = dict(max_pixels=10_000, max_file_bytes=1_000_000)
    threaded = ImageDataset(records, make_preprocessing("imagenet", N), threads=3, **kw)
    serial = ImageDataset(records, make_preprocessing("imagenet", N), **kw)
    order = list(range(len(records)))[::-1]
    got, want = threaded.__getitems__(order), [serial[i] for i in order]
    assert [g.index for g in got] == order
    for g, w in zip(got, want):
        assert (g.error, g.width, g.height, g.format, g.sha256) == (w.error, w.width, w.height, w.format, w.sha256)
        assert (g.image is None and w.image is None) or torch.equal(g.image, w.image)
    assert any(g.image is None for g in got) and any(g.image is not None for g in got)


def test_threads_must_be_a_positive_integer_and_the_pool_is_not_pickled(tmp_path):
    import pickle

    records, _ = write_mixed_folder(tmp_path)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            ImageDataset(records, make_preprocessing("imagenet", N), 10**6, 10**6, threads=bad)
    ds = ImageDataset(records, make_preprocessing("imagenet", N), 10**6, 10**6, threads=2)
    ds.__getitems__([0, 2])
    assert ds._pool is not None
    copy = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker process receives
    assert copy._pool is None and copy.threads == 2
    assert [i.index for i in copy.__getitems__([2, 0])] == [2, 0]


def test_loading_on_threads_leaves_the_callers_warning_filters_as_they_were(tmp_path):
    """decode_image's catch_warnings saves and restores the process's filters; from several threads at once that
    could leave PIL's "ignore" in force for the rest of the job, or let its warnings through meanwhile."""
    import random
    import time
    import warnings

    class Racing(ImageDataset):
        def decode(self, data):  # what decode_image does, with time for the threads to race
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                time.sleep(random.random() / 200)
                warnings.warn("noise from PIL", stacklevel=1)
                return super().decode(data)

    records, _ = write_mixed_folder(tmp_path)
    ds = Racing(records * 8, make_preprocessing("imagenet", N), 10_000, 1_000_000, threads=4)
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inside = list(warnings.filters)
        for _ in range(3):
            ds.__getitems__(list(range(len(ds))))
        assert warnings.filters == inside
    assert not [w for w in caught if "noise from PIL" in str(w.message)]
    assert warnings.filters == before
