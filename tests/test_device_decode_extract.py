"""The extract end to end with --decode gpu on the CPU device (torchvision's decoder in the main process: the device
path's code) against --decode cpu on the same files, good and bad: the same rows, values within the input's grey
level; and a run is the same run whichever decode made it (it resumes, run.json says which)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.small_runs import run

pytestmark = pytest.mark.slow  # the extract job end to end

VALUES = ("logit_", "prob_")
# Of the table's largest value. The crops differ by at most 1 grey level (0.4% of the input's range) in 6-18% of
# their pixels (tests/test_device_decode.py); measured here: means 5e-4, maxima 3.8e-3 (one pixel can carry a maximum),
# logits 1e-5. The predicted class is not compared: random weights put both classes near 0.5, and one flips.
TOLERANCE = 1e-2


def noisy(w: int, h: int, seed: int) -> Image.Image:
    """Smooth colour fields (tests/helpers.py's write_image draws the same) and some fine noise, as a photo has."""
    rng = np.random.default_rng(seed)
    smooth = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    pixels = np.asarray(smooth, np.float32) + rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_files(folder) -> None:
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    noisy(320, 240, 0).save(folder / "cat.0.jpg", quality=85)
    noisy(640, 480, 1).save(folder / "dog.1.jpg", exif=exif)  # turned a quarter: the device turns it too
    noisy(300, 200, 2).convert("L").save(folder / "cat.2.jpg")
    noisy(120, 90, 3).save(folder / "dog.3.jpg", format="PNG")  # a PNG named .jpg: the CPU path
    noisy(200, 150, 4).convert("CMYK").save(folder / "cat.4.jpg")  # CMYK: the CPU path
    good = io.BytesIO()
    noisy(400, 300, 5).save(good, format="JPEG")
    (folder / "dog.5.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])  # truncated
    (folder / "cat.6.jpg").write_text("not an image " * 40)
    noisy(500, 375, 7).save(folder / "dog.7.jpg", progressive=True, quality=80)
    noisy(60, 40, 8).save(folder / "cat.8.jpg")


def read(out, table: str) -> pd.DataFrame:
    return pd.read_parquet(out / table).sort_values("image_id").reset_index(drop=True)


def test_decode_gpu_gives_the_cpu_paths_rows_and_values_within_tolerance(tmp_path):
    data = tmp_path / "train"
    write_files(data)
    outs = {d: tmp_path / f"out-{d}" for d in ("cpu", "gpu")}
    for decode, out in outs.items():
        args = ("--weights", "random", "--layers", "conv3_3", "--set", "unit_size=4", "--decode", decode)
        assert run(data, out, *args) == 0

    cpu, gpu = read(outs["cpu"], "predictions"), read(outs["gpu"], "predictions")
    assert list(cpu.error.fillna("")) == ["", "", "", "not an image", "", "", "", "truncated", ""]  # by image_id
    same = [c for c in cpu.columns if not c.startswith(VALUES) and c not in ("confidence", "pred", "correct", "phash")]
    pd.testing.assert_frame_equal(gpu[same], cpu[same])
    ok = cpu.status == "ok"
    bits = [bin((int(a) ^ int(b)) & (2**64 - 1)).count("1") for a, b in zip(cpu.phash[ok], gpu.phash[ok])]
    assert max(bits) <= 2 and gpu.phash[~ok].isna().all()
    for prefix in VALUES:
        cols = [c for c in cpu.columns if c.startswith(prefix)]
        a, b = cpu.loc[ok, cols].to_numpy(np.float64), gpu.loc[ok, cols].to_numpy(np.float64)
        assert np.abs(b - a).max() <= TOLERANCE * np.abs(a).max(), prefix
    for table in ("activations/conv3_3", "activations_max/conv3_3"):
        a, b = read(outs["cpu"], table), read(outs["gpu"], table)
        assert list(a.image_id) == list(b.image_id) == list(cpu.image_id[ok])
        a, b = a.drop(columns="image_id").to_numpy(np.float64), b.drop(columns="image_id").to_numpy(np.float64)
        assert np.abs(b - a).max() <= TOLERANCE * np.abs(a).max(), table
    assert json.loads((outs["gpu"] / "run.json").read_text())["decode"] == "gpu"
    assert json.loads((outs["cpu"] / "run.json").read_text())["decode"] == "cpu"


def test_a_run_is_the_same_run_whatever_decodes_it(tmp_path, caplog):
    data = tmp_path / "train"
    write_files(data)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv1_1", "--decode", "cpu") == 0
    caplog.clear()
    with caplog.at_level("INFO", logger="cnn_blackbox"):
        assert run(data, out, "--weights", "random", "--layers", "conv1_1", "--decode", "gpu") == 0
    said = [r.getMessage() for r in caplog.records]
    assert "nothing to extract: all 1 units of this shard were done already" in said, said
    assert any(line.startswith("decode gpu: JPEGs decoded by torchvision.io.decode_jpeg in the main") for line in said)
