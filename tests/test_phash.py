"""The perceptual hash against imagehash, the Hamming search against every pair, and the near-duplicate rule on
data that did not set it, through the real extract and report with two different weights."""

from __future__ import annotations

import io
import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from analysis.config import make_config, read_config_section
from analysis.data.decoding import decode_image
from analysis.data.perceptual_hash import compute_phash, to_unsigned
from analysis.stats.hamming import compute_hamming_pairs
from analysis.store import contract as C
from analysis.store import tables
from analysis.store.run import read_finished_run
from analysis.store.synthetic import SyntheticRun, write_synthetic_run
from jobs import extract, report
from jobs.config import DatasetIssuesConfig, ExtractConfig, ReportConfig
from tests.planted import REAL_PHOTOS

imagehash = pytest.importorskip("imagehash", reason="imagehash is the reference (requirements-dev.txt)")
RADIUS = read_config_section(None, "report_qa")["near_duplicate_bits"]
SITE = Path(np.__file__).resolve().parents[1]
OTHER_PHOTOS = (
    SITE / "matplotlib" / "mpl-data" / "sample_data" / "grace_hopper.jpg",  # real photos that ship
    SITE / "sklearn" / "datasets" / "images" / "china.jpg",  # with the runtime packages
    SITE / "sklearn" / "datasets" / "images" / "flower.jpg",
)
needs_photos = pytest.mark.skipif(
    not REAL_PHOTOS.is_dir(), reason=f"the real photos are not at {REAL_PHOTOS} (a fresh clone has no ../shared)"
)


def reference(image: Image.Image) -> int:
    return int(str(imagehash.phash(image)), 16)


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def hash_file(data: bytes) -> int:
    return compute_phash(decode_image(data, 10**9).image)


def bits(a: int, b: int) -> int:
    return bin((a ^ b) & (2**64 - 1)).count("1")


def smooth(seed: int, size=(96, 72), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    ImageDraw.Draw(im).ellipse((10, 10, 40 + seed % 30, 50), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im.convert(mode) if mode != "RGB" else im


@needs_photos
def test_hash_is_imagehash_phash_on_real_photos():
    for path in sorted(p for p in REAL_PHOTOS.rglob("*") if p.is_file()):
        image = decode_image(path.read_bytes(), 10**9).image
        assert to_unsigned(compute_phash(image)) == reference(image), path.name


@pytest.mark.parametrize(
    "mode, fmt",
    [
        ("1", "PNG"),
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("RGB", "JPEG"),
        ("RGBA", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("RGB", "WEBP"),
        ("L", "GIF"),
    ],
)
def test_hash_is_imagehash_phash_in_every_mode(mode, fmt):
    """The hash of the decoded image (RGB, as the extract has it) is imagehash's, bit for bit, whatever the file's
    mode; flat and tiny images (all coefficients but one near zero: the median decides by rounding) too."""
    for seed, size in ((0, (96, 72)), (1, (7, 300)), (2, (3, 2))):
        data = encode(smooth(seed, size, mode), fmt)
        image = decode_image(data, 10**9).image
        assert to_unsigned(compute_phash(image)) == reference(image), (mode, fmt, size)
    for value in (0, 128, 255):
        flat = Image.new("RGB", (40, 30), (value, value, value))
        assert to_unsigned(compute_phash(flat)) == reference(flat)


def test_hash_is_stored_as_signed_int64():
    image = smooth(3)
    value, unsigned = compute_phash(image), reference(image)
    assert -(2**63) <= value < 2**63 and value == (unsigned - 2**64 if unsigned >= 2**63 else unsigned)
    assert format(to_unsigned(value), "016x") == str(imagehash.phash(image))


@pytest.mark.parametrize("n, memory", [(0, 1000), (1, 1000), (257, 1), (257, 3000), (257, 1 << 20)])
def test_hamming_search_finds_every_pair_within_the_radius(n, memory):
    rng = np.random.default_rng(n)
    h = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64, endpoint=True)
    for i in range(0, n - 1, 7):  # planted pairs at every distance 0-20, the sign bit among the flipped ones
        flips = rng.choice(64, size=i % 21, replace=False)
        h[i + 1] = h[i] ^ np.bitwise_or.reduce(
            np.left_shift(np.uint64(1), flips.astype(np.uint64)), initial=np.uint64(0)
        ).view(np.int64)
    a, b, d = compute_hamming_pairs(h, 12, memory)
    want = [(i, j, bits(int(h[i]), int(h[j]))) for i, j in itertools.combinations(range(n), 2)]
    assert list(zip(a.tolist(), b.tolist(), d.tolist())) == [w for w in want if w[2] <= 12]


@needs_photos
def test_radius_holds_on_copies_and_distinct_real_photos():
    """Transforms beside the measured ones (other scales, qualities, resamplers, WebP): copies within the radius,
    every pair of distinct photos outside it."""
    photos = {p: decode_image(p.read_bytes(), 10**9).image for p in sorted(REAL_PHOTOS.rglob("*")) if p.is_file()}
    hashes = {p: compute_phash(im) for p, im in photos.items()}
    for p, im in photos.items():
        w, h = im.size
        copies = {
            "0.65x q60": encode(im.resize((w * 65 // 100, h * 65 // 100), Image.Resampling.BILINEAR), quality=60),
            "0.85x WebP": encode(im.resize((w * 85 // 100, h * 85 // 100)), "WEBP", quality=80),
            "2% crop": encode(im.crop((w // 50, h // 50, w - w // 50, h - h // 50)), quality=88),
            "gray 0.75x": encode(im.convert("L").resize((w * 3 // 4, h * 3 // 4)), quality=70),
        }
        for name, data in copies.items():
            assert bits(hashes[p], hash_file(data)) <= RADIUS, (p.name, name)
    distinct = [bits(a, b) for a, b in itertools.combinations(hashes.values(), 2)]
    assert min(distinct) > RADIUS


def write_issue_case(root: Path) -> set[frozenset[str]]:
    """The issue's case: 48 pictures (the 20 real photos, 3 other real photos, 25 drawn), 4 copies of dog photos
    resized 0.8x and re-saved as JPEG quality 75, and copies the radius was not measured on (the other photos,
    a drawn picture); returns the copy pairs."""
    pairs = set()
    for p in sorted(REAL_PHOTOS.rglob("*")):
        if p.is_file():
            (root / p.parent.name).mkdir(parents=True, exist_ok=True)
            (root / p.parent.name / p.name).write_bytes(p.read_bytes())
    for n, p in enumerate(OTHER_PHOTOS):
        (root / "Other" / f"photo{n}.jpg").parent.mkdir(exist_ok=True)
        (root / "Other" / f"photo{n}.jpg").write_bytes(p.read_bytes())
    for n in range(25):
        smooth(100 + n, (160, 120)).save(root / "Other" / f"drawn{n}.png")
    for name in ("2.jpg", "5.jpg", "8.jpg", "9.jpg"):
        im = decode_image((root / "Dog" / name).read_bytes(), 10**9).image
        (root / "Dog" / f"copy-{name}").write_bytes(
            encode(im.resize((round(im.width * 0.8), round(im.height * 0.8)), Image.Resampling.LANCZOS), quality=75)
        )
        pairs.add(frozenset((f"Dog/{name}", f"Dog/copy-{name}")))
    for n, make in enumerate(
        (
            lambda im: encode(im.resize((im.width * 2 // 3, im.height * 2 // 3)), "WEBP", quality=70),
            lambda im: encode(im.crop((6, 4, im.width - 6, im.height - 4)), quality=55),
            lambda im: encode(im.convert("L"), "PNG"),
        )
    ):
        im = decode_image((root / "Other" / f"photo{n}.jpg").read_bytes(), 10**9).image
        ext = ("webp", "jpg", "png")[n]
        (root / "Other" / f"photo{n}-copy.{ext}").write_bytes(make(im))
        pairs.add(frozenset((f"Other/photo{n}.jpg", f"Other/photo{n}-copy.{ext}")))
    (root / "Other" / "drawn3-copy.jpg").write_bytes(encode(smooth(103, (160, 120)).resize((120, 90)), quality=65))
    pairs.add(frozenset(("Other/drawn3.png", "Other/drawn3-copy.jpg")))
    return pairs


@pytest.fixture(scope="module")
def issue_case(tmp_path_factory):
    if not REAL_PHOTOS.is_dir():
        pytest.skip(f"the real photos are not at {REAL_PHOTOS} (a fresh clone has no ../shared)")
    data = tmp_path_factory.mktemp("data")
    pairs = write_issue_case(data)
    found = {}
    for seed in (0, 1):  # two different random weights: other features, the same pixels
        run = tmp_path_factory.mktemp(f"run{seed}") / "out"
        extract.main(
            make_config(
                ExtractConfig,
                {
                    **read_config_section(None, "extract"),
                    "data": str(data),
                    "out": str(run),
                    "weights": "random",
                    "seed": seed,
                    "image_size": 32,
                    "layers": ["conv5_3"],
                    "attribution_layers": None,
                    "device": "cpu",
                    "precision": "fp32",
                    "batch_size": 16,
                    "workers": 0,
                    "download": False,
                    "progress": False,
                },
            )
        )
        meta = tables.read_run_json(run)
        report.write_dataset_issues(
            make_config(DatasetIssuesConfig, read_config_section(None, "report_qa")),
            read_finished_run(run),
            tables.read_predictions(run, meta["classes"]),
            run,
        )
        found[seed] = (run, pd.read_parquet(run / C.DATASET_ISSUES))
    return data, pairs, found


def pairs_of(issues: pd.DataFrame, issue: str) -> set[frozenset[str]]:
    rows = issues[issues[C.ISSUE] == issue]
    return {frozenset(g[C.IMAGE_ID]) for _, g in rows.groupby(C.PAIR)}


@pytest.mark.slow
def test_every_copy_is_found_and_no_distinct_pair(issue_case):
    _, pairs, found = issue_case
    run, issues = found[0]
    assert pairs_of(issues, C.ISSUE_NEAR_DUPLICATE) == pairs
    near = issues[issues[C.ISSUE] == C.ISSUE_NEAR_DUPLICATE]
    assert (near[C.HAMMING] <= RADIUS).all() and np.allclose(near[C.SCORE], 1 - near[C.HAMMING] / 64)
    pred = tables.read_predictions(run, ["cat", "dog"]).set_index(C.IMAGE_ID)
    for pair in pairs:
        a, b = (int(pred.loc[i, C.PHASH]) for i in pair)
        assert near.loc[near[C.IMAGE_ID] == min(pair), C.HAMMING].iloc[0] == bits(a, b)
    assert not pairs_of(issues, C.ISSUE_SIMILAR_SCENE) & pairs  # a near pair is not repeated as a scene


@pytest.mark.slow
def test_near_duplicates_do_not_change_with_the_weights(issue_case):
    _, _, found = issue_case
    (run0, a), (run1, b) = found[0], found[1]
    x0 = pd.read_parquet(C.activation_dir(run0, "conv5_3")).set_index(C.IMAGE_ID).sort_index()
    x1 = pd.read_parquet(C.activation_dir(run1, "conv5_3")).set_index(C.IMAGE_ID).sort_index()
    assert not np.allclose(x0.to_numpy(), x1.to_numpy())  # the features differ ...
    assert pairs_of(a, C.ISSUE_NEAR_DUPLICATE) == pairs_of(b, C.ISSUE_NEAR_DUPLICATE)  # ... the pairs do not


@pytest.mark.slow
def test_phash_column_follows_the_contract(issue_case):
    data, _, found = issue_case
    run, _ = found[0]
    schema = pq.read_schema(next((run / C.PREDICTIONS).glob("*.parquet")))
    assert schema.field(C.PHASH).type == "int64"
    pred = pd.read_parquet(run / C.PREDICTIONS)
    ok = pred[C.STATUS] == C.STATUS_OK
    assert pred.loc[ok, C.PHASH].notna().all()
    for image_id, value in zip(pred[C.IMAGE_ID][:6], pred[C.PHASH][:6]):  # the whole image, not the crop
        assert to_unsigned(int(value)) == reference(decode_image((data / image_id).read_bytes(), 10**9).image)


def test_hashes_are_read_whole_beside_error_rows(tmp_path):
    """A null (an error row) must not turn the column into float64, which keeps 53 of the 64 bits."""
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_images=40, layers={"conv5_3": 4}, n_errors=5))
    stored = pq.read_table(run / C.PREDICTIONS, columns=[C.PHASH]).column(0).to_pylist()
    read = tables.read_predictions(run, ["cat", "dog"])[C.PHASH]
    assert stored[:5] == [None] * 5 and read[:5].isna().all()
    assert [int(v) for v in read[5:]] == stored[5:]


def test_a_run_without_the_hash_is_refused_in_one_line(tmp_path, caplog):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_images=30, layers={"conv5_3": 8}))
    for part in (run / C.PREDICTIONS).glob("*.parquet"):  # as a run of format 2 wrote it
        table = pq.read_table(part)
        pq.write_table(table.drop_columns([C.PHASH]), part)
    with caplog.at_level(logging.WARNING, logger="cnn_blackbox"):
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
    lines = [r.getMessage() for r in caplog.records if "dataset checks not run" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "Traceback" not in caplog.text
    assert "make extract" in lines[0] and "ARGS=--overwrite" in lines[0] and C.PHASH in lines[0]
    html = (run / C.REPORT_DIR / C.INDEX_HTML).read_text(encoding="utf-8")
    section = html[html.index("id='checks'") :]
    assert "dataset checks not run" in section[:2000] and "ARGS=--overwrite" in section[:2000]
    assert not (run / C.REPORT_DIR / C.DATASET_ISSUES).exists()
