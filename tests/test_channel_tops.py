"""Every channel's top images (channel_tops) and the image cards' files (cards/part-NNNNN.js), on small synthetic runs
whose peak, Grad-CAM and attribution tables the tests write with pyarrow, checked against pandas and planted values."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.stats.channel_tops import compute_channel_tops, compute_top_indices
from analysis.stats.groups import make_groups
from analysis.store import contract, tables
from analysis.store.synthetic import SyntheticRun, write_synthetic_run
from jobs.report_pictures import write_cards
from reports.run import cards
from reports.run.channel_galleries import SAME, make_channel_galleries
from tests.small_runs import make_report

C, K, GRID, CAM = 10, 4, (3, 5), (2, 3)  # channels of conv5_3, images per channel, the peak and Grad-CAM grids
NOT_A_TAG = "cat.</script><script>alert(1)</script>.jpg"


def _units(run: Path, layer: str) -> list[np.ndarray]:
    """Each unit's image ids, in table order."""
    parts = tables.list_parts(contract.activation_dir(run, layer))
    return [pd.read_parquet(p, columns=[contract.IMAGE_ID])[contract.IMAGE_ID].to_numpy() for p in parts]


def _write(folder: Path, unit: int, ids, columns: dict[str, np.ndarray], kind) -> None:
    arrays = [pa.array(list(ids), pa.string())] + [pa.array(v, kind) for v in columns.values()]
    names = [contract.IMAGE_ID, *columns]
    tables.write_parquet_atomic(pa.Table.from_arrays(arrays, names=names), folder / contract.part_name(unit))


def add_tables(run: Path, seed: int = 0, reverse_peaks: bool = False) -> dict:
    """Tied channel means of conv5_3 (small integers, channel 3 all zero), its peak table (flat index planted as
    (row * 7 + channel) % cells), Grad-CAM and contributions of every class (an all-zero map on every 5th image);
    run.json says so. Returns the values by image id."""
    rng = np.random.default_rng(seed)
    meta = tables.read_run_json(run)
    classes, planted = meta["classes"], {"means": {}, "peak": {}, "cam": {}, "contrib": {}}
    h, w = GRID
    for unit, ids in enumerate(_units(run, "conv5_3")):
        rows = np.arange(len(ids)) + unit * 1000
        means = rng.integers(0, 4, (len(ids), C)).astype(np.float32)
        means[:, 3] = 0
        peak = ((rows[:, None] * 7 + np.arange(C)) % (h * w)).astype(np.uint16)
        cols = {contract.channel_column(c): means[:, c] for c in range(C)}
        _write(contract.activation_dir(run, "conv5_3"), unit, ids, cols, pa.float32())
        order = np.arange(len(ids))[::-1] if reverse_peaks else np.arange(len(ids))
        cols = {contract.channel_column(c): peak[order, c] for c in range(C)}
        _write(contract.activation_dir(run, "conv5_3", contract.STAT_PEAK), unit, ids[order], cols, pa.uint16())
        for cls in classes:
            cam = np.maximum(rng.normal(size=(len(ids), CAM[0] * CAM[1])), 0).astype(np.float32)
            cam[rows % 5 == 0] = 0
            contrib = rng.normal(size=(len(ids), C)).astype(np.float32)
            contrib[:, 5] = contrib[:, 6]  # a tie: the lower channel first
            cols = {contract.gradcam_column(j): cam[:, j] for j in range(cam.shape[1])}
            _write(contract.gradcam_dir(run, cls, "conv5_3"), unit, ids, cols, pa.float32())
            cols = {contract.channel_column(c): contrib[:, c] for c in range(C)}
            _write(contract.attribution_dir(run, cls, "conv5_3"), unit, ids, cols, pa.float32())
            for i, image_id in enumerate(ids):
                planted["cam"][(image_id, cls)] = cam[i]
                planted["contrib"][(image_id, cls)] = contrib[i]
        for i, image_id in enumerate(ids):
            planted["means"][image_id], planted["peak"][image_id] = means[i], peak[i]
    meta["layers"]["conv5_3"] = C
    meta["peak_grid"] = {"conv5_3": list(GRID)}
    meta["gradcam"] = {"layer": "conv5_3", "grid": list(CAM)}
    meta["attribution"] = {"layers": ["conv5_3"], "classes": classes, "channels": {"conv5_3": C}, "method": "gxa"}
    tables.write_json_atomic(meta, run / contract.RUN_JSON)
    return planted


def _run(tmp_path: Path, classes=("cat", "dog"), hostile=()) -> Path:
    """70 images in units of 32, three decode errors first (hostile names replace the errors)."""
    errors = 0 if hostile else 3
    spec = SyntheticRun(70, {"conv5_3": C}, classes, n_errors=errors, unit_size=32, hostile=hostile)
    return write_synthetic_run(tmp_path / "run", spec)


def _tops(run: Path, memory: int) -> tuple[pd.DataFrame, object]:
    meta = tables.read_run_json(run)
    groups = make_groups(tables.read_predictions(run, meta["classes"]), meta["classes"])
    return compute_channel_tops(run, {"conv5_3": C}, groups, K, memory, meta.get("peak_grid")), groups


def test_top_indices_take_the_lower_index_among_ties_at_the_cut():
    v = np.array([[1, 3, 3, 2, 3, 1, 3], [0, 0, 0, 0, 0, 0, 0], [np.nan, 1, np.nan, 5, 1, 1, 0]], np.float32)
    assert compute_top_indices(v, 3).tolist() == [[1, 2, 4], [0, 1, 2], [3, 1, 4]]
    assert compute_top_indices(v[:, :2], 5).shape == (3, 2)


def test_every_channel_top_k_equals_pandas_nlargest_over_all_and_each_class(tmp_path):
    run = _run(tmp_path)
    planted = add_tables(run)
    # 28 bytes per value: blocks of 3 channels over 67 rows, so the 10 channels cross three block boundaries
    tops, groups = _tops(run, 28 * 67 * 3)
    ids = np.concatenate(_units(run, "conv5_3"))
    frame = pd.DataFrame(np.stack([planted["means"][i] for i in ids]))  # (N, C), table order
    codes = groups.codes_of(ids)
    assert set(tops[contract.SCOPE]) == {contract.SCOPE_ALL, contract.SCOPE_CLASS}
    for c in range(C):
        for scope, cls, inside in [("all", None, codes >= -1)] + [
            ("class", name, codes == j) for j, name in enumerate(groups.classes)
        ]:
            want = frame.loc[inside, c].nlargest(K, keep="first")  # ties: the first rows, in row order
            got = tops[(tops[contract.CHANNEL] == c) & (tops[contract.SCOPE] == scope)]
            got = got[got[contract.CLASS].isna()] if cls is None else got[got[contract.CLASS] == cls]
            got = got.sort_values(contract.IMAGE_RANK)
            assert got[contract.IMAGE_RANK].tolist() == list(range(1, K + 1))
            assert got[contract.IMAGE_ID].tolist() == ids[want.index].tolist(), (c, scope, cls)
            assert got[contract.VALUE].tolist() == want.tolist()
    assert tops[contract.PEAK_Y].notna().all()


@pytest.mark.parametrize("reverse", [False, True])  # the peak table's rows in another order than the means'
def test_peak_is_the_centre_of_the_planted_cell(tmp_path, reverse):
    run = _run(tmp_path)
    planted = add_tables(run, reverse_peaks=reverse)
    tops, _ = _tops(run, 1 << 20)
    h, w = GRID
    for image_id, c, y, x in zip(
        tops[contract.IMAGE_ID], tops[contract.CHANNEL], tops[contract.PEAK_Y], tops[contract.PEAK_X]
    ):
        flat = int(planted["peak"][image_id][c])
        assert (y, x) == (np.float32((flat // w + 0.5) / h), np.float32((flat % w + 0.5) / w))
        assert 0 < y < 1 and 0 < x < 1


def _read_parts(out: Path, index: dict) -> tuple[list, list]:
    ids, rows = [], []
    for n, name in enumerate(index["parts"]):
        text = (out / name).read_text(encoding="ascii")
        assert "<" not in text and ">" not in text and "&" not in text  # nothing can close the script or start a tag
        head = f"{cards.CALLBACK}({n * index['per_part']}, "
        assert text.startswith(head) and text.endswith(");\n")
        data = json.loads(text[len(head) : -3])
        assert data["grid"] == list(CAM) and data["classes"] == index["classes"]
        ids += data["ids"]
        rows += data["rows"]
    return ids, rows


def test_card_files_give_back_the_maps_and_the_top_contributions(tmp_path, monkeypatch):
    classes = ("c<a>t", 'd"o&g')  # hostile class names: escaped in the files, read back unchanged
    run = _run(tmp_path, classes=classes, hostile=(NOT_A_TAG, "dog.'-alert(3)-'.jpg", "cat.<!--.jpg"))
    planted = add_tables(run)
    monkeypatch.setattr(cards, "PER_PART", 16)  # 70 images: five files, the last one short
    ids = [str(i) for i in np.concatenate(_units(run, "conv5_3"))][::-1]  # the map's order need not be the table's
    out = tmp_path / "report"
    index = write_cards(run, tables.read_run_json(run), out, ids)
    assert index["note"] is None and index["classes"] == list(classes) and index["grid"] == list(CAM)
    assert index["parts"] == [f"cards/part-{n:05d}.js" for n in range(5)]
    got_ids, rows = _read_parts(out, index)
    assert got_ids == ids and NOT_A_TAG in got_ids
    for image_id, row in zip(ids, rows):
        for cls, (scale, b64, top) in zip(classes, row):
            cam = planted["cam"][(image_id, cls)]
            decoded = np.frombuffer(base64.b64decode(b64), np.uint8).astype(np.float64) * scale / 255
            assert len(decoded) == cam.size and (scale == 0) == (cam.max() == 0)
            assert np.abs(decoded - cam).max() <= cam.max() / 255 + 1e-6
            want = pd.Series(planted["contrib"][(image_id, cls)]).nlargest(5, keep="first")
            assert [c for c, _ in top] == want.index.tolist()
            assert [v for _, v in top] == pytest.approx(want.tolist(), rel=5e-4)


def test_an_old_run_has_null_peaks_and_no_card_files(tmp_path):
    run = _run(tmp_path)
    meta = tables.read_run_json(run)  # no peak, Grad-CAM nor attribution tables, as every run extracted before them
    for folder, key in ((contract.ACTIVATIONS_PEAK, "peak_grid"), (contract.GRADCAM, "gradcam")):
        shutil.rmtree(run / folder, ignore_errors=True)
        meta.pop(key, None)
    tables.write_json_atomic(meta, run / contract.RUN_JSON)
    tops, _ = _tops(run, 1 << 20)
    out = tmp_path / "report"
    tables.write_table(tops, contract.CHANNEL_TOPS_SCHEMA, out / contract.CHANNEL_TOPS)
    written = pq.read_table(out / contract.CHANNEL_TOPS)
    assert written.num_rows == C * 3 * K  # every channel, all and two classes
    assert written.column(contract.PEAK_Y).null_count == written.column(contract.PEAK_X).null_count == len(tops)
    index = write_cards(run, tables.read_run_json(run), out, list(tops[contract.IMAGE_ID].unique()))
    assert index["parts"] == [] and "without attribution" in index["note"]
    assert not (out / contract.CARDS_DIR).exists()


def test_galleries_name_map_rows_and_list_a_scope_once_when_equal():
    tops = pd.DataFrame(
        {
            contract.LAYER: "conv5_3",
            contract.CHANNEL: [0, 0, 0, 0, 0, 0],
            contract.SCOPE: ["all", "all", "class", "class", "class", "class"],
            contract.CLASS: [None, None, "cat", "cat", "dog", "dog"],
            contract.IMAGE_RANK: [1, 2, 1, 2, 1, 2],
            contract.IMAGE_ID: ["b", "a", "b", "a", "c", "d"],
            contract.VALUE: np.float32([2.123456, 1.5, 2.123456, 1.5, 0.25, 0.0]),
            contract.PEAK_Y: np.float32([0.1, 0.5, 0.1, 0.5, np.nan, 0.9]),
            contract.PEAK_X: np.float32([0.3, 0.5, 0.3, 0.5, np.nan, 0.95]),
        }
    )
    g = make_channel_galleries(tops, ["a", "b", "c", "d"], {"conv5_3": 2}, ["cat", "dog"], "label", 2, None)
    every, within = g["layers"]["conv5_3"][0]
    assert every == [[1, 2.123, 10, 30], [0, 1.5, 50, 50]]
    assert within == [SAME, [[2, 0.25, None, None], [3, 0.0, 90, 95]]]
    assert g["layers"]["conv5_3"][1] == [[], [[], []]]  # a channel without rows still has its entry


@pytest.mark.slow  # the report job end to end
def test_the_report_writes_channel_tops_and_card_files(tmp_path):
    run = _run(tmp_path)
    add_tables(run)
    out = make_report(run, top_images=3)
    tops = pd.read_parquet(out / contract.CHANNEL_TOPS)
    assert tuple(tops.columns) == contract.CHANNEL_TOPS_COLUMNS
    assert len(tops) == C * 3 * 3 and tops[contract.PEAK_Y].notna().all()  # every channel, 3 scopes, 3 images
    assert sorted(p.name for p in (out / contract.CARDS_DIR).iterdir()) == ["part-00000.js"]
