"""Units: part k of every table holds exactly files k*U .. (k+1)*U-1, whatever the batch boundaries."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.store import contract, layout, manifest, tables
from analysis.store.layout import Attribution, ValueLayout
from analysis.store.writer import UnitSchemas, UnitWriter

LAYERS = {"conv1_1": 3, "conv5_3": 2}


def make_writer(out, classes, layers, unit_size, meta, attribution=None, **options) -> UnitWriter:
    values = ValueLayout(layers, attribution)
    return UnitWriter(out, values, UnitSchemas.make(classes, False, values, meta), unit_size, **options)


def _batches(n_files, batch, bad_every, rng):
    ids = [f"img{i:03d}.jpg" for i in range(n_files)]
    for s in range(0, n_files, batch):
        chunk = ids[s : s + batch]
        ok = [(s + j) % bad_every != 0 for j in range(len(chunk))]
        rows = {f.name: [None] * len(chunk) for f in contract.prediction_schema(["cat", "dog"], False)}
        rows[contract.IMAGE_ID] = chunk
        rows[contract.STATUS] = ["ok" if g else "error" for g in ok]
        acts = rng.random((sum(ok), 2 * sum(LAYERS.values()))).astype(np.float32)
        yield rows, ok, acts


@pytest.mark.parametrize("n_files, batch, unit", [(23, 4, 5), (10, 10, 10), (7, 3, 100), (12, 5, 1)])
def test_units_split_at_file_boundaries_and_keep_every_value(tmp_path, n_files, batch, unit):
    rng = np.random.default_rng(0)
    w = make_writer(tmp_path, ["cat", "dog"], LAYERS, unit, {"x": 1})
    sent_ok_ids, sent = [], []
    for rows, ok, acts in _batches(n_files, batch, 3, rng):
        w.add(rows, ok, acts)
        sent_ok_ids += [i for i, g in zip(rows[contract.IMAGE_ID], ok) if g]
        sent.append(acts)
    w.close()
    sent = np.concatenate(sent)

    parts = tables.list_parts(tmp_path / contract.PREDICTIONS)
    assert len(parts) == -(-n_files // unit) == w.unit
    for k, part in enumerate(parts):  # unit k holds files k*U .. (k+1)*U - 1
        ids = pq.read_table(part).column(contract.IMAGE_ID).to_pylist()
        assert ids == [f"img{i:03d}.jpg" for i in range(k * unit, min(n_files, (k + 1) * unit))]
        for layer in LAYERS:  # the same unit's activations hold exactly its ok images
            a_ids = pq.read_table(contract.activation_dir(tmp_path, layer) / part.name).column("image_id").to_pylist()
            assert a_ids == [i for i in ids if int(i[3:6]) % 3 != 0]

    mean = pd.read_parquet(contract.activation_dir(tmp_path, "conv5_3"))
    mx = pd.read_parquet(contract.activation_dir(tmp_path, "conv5_3", "max"))
    assert mean.image_id.tolist() == sent_ok_ids
    # layout of acts: [conv1_1 means (3), conv5_3 means (2), conv1_1 max (3), conv5_3 max (2)]
    np.testing.assert_array_equal(mean[["c0", "c1"]].to_numpy(), sent[:, 3:5])
    np.testing.assert_array_equal(mx[["c0", "c1"]].to_numpy(), sent[:, 8:10])
    assert mean.dtypes.iloc[1] == np.float32
    assert not list(tmp_path.rglob("*.tmp")), "no temp files may be left behind"


def test_wrong_activation_width_is_refused(tmp_path):
    w = make_writer(tmp_path, ["cat"], LAYERS, 4, {})
    rows = {f.name: [None] for f in contract.prediction_schema(["cat"], False)}
    rows[contract.IMAGE_ID] = ["a"]
    with pytest.raises(ValueError, match="expected 10"):
        w.add(rows, [True], np.zeros((1, 9), np.float32))


def test_atomic_writes_leave_readable_files_and_no_temp(tmp_path):
    from analysis.store.tables import write_bytes_atomic

    write_bytes_atomic(b"x", tmp_path / "a" / "f.json")
    w = make_writer(tmp_path, ["cat"], {"conv1_1": 1}, 1, {})
    rows = {f.name: [None] for f in contract.prediction_schema(["cat"], False)}
    rows[contract.IMAGE_ID], rows[contract.STATUS] = ["a"], ["ok"]
    w.add(rows, [True], np.zeros((1, 2), np.float32))
    for f in [tmp_path / "a" / "f.json", *tables.list_parts(tmp_path / contract.PREDICTIONS)]:
        assert f.stat().st_mode & 0o777 == 0o644, f  # mkstemp's 0600 would hide outputs from a team or server
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_shards_units_keep_their_global_numbers_and_commit_a_manifest_last(tmp_path):
    rng = np.random.default_rng(1)
    # shard 1 of 3 over 23 files in units of 5: units 1 (files 5..9) and 4 (files 20..22), in batches inside units
    w = make_writer(
        tmp_path,
        ["cat", "dog"],
        LAYERS,
        5,
        {"x": 1},
        units=[(1, 5), (4, 3)],
        stamp={"identity_sha256": "abc", "shard": "1/3"},
    )
    batches = list(_batches(23, 1, 3, rng))
    for i in list(range(5, 10)) + list(range(20, 23)):
        rows, ok, acts = batches[i]
        w.add(rows, ok, acts)
        assert w.at_unit_boundary == (i in (9, 22))
    w.close()
    assert [p.name for p in tables.list_parts(tmp_path / contract.PREDICTIONS)] == [
        "part-00001.parquet",
        "part-00004.parquet",
    ]
    units = manifest.read_unit_manifests(tmp_path, "abc")
    assert sorted(units) == [1, 4]
    u = units[1]
    assert (u["first_id"], u["last_id"], u["shard"]) == ("img005.jpg", "img009.jpg", "1/3")
    assert u["counts"]["files"] == 5 and u["counts"]["ok"] == 3 and u["counts"]["error"] == 2  # 6 and 9 are bad
    assert sorted(u["parts"]) == sorted(
        ["predictions/part-00001.parquet"]
        + [f"{d}/{layer}/part-00001.parquet" for d in ("activations", "activations_max") for layer in LAYERS]
    )
    assert manifest.read_unit_manifests(tmp_path, "another run") == {}


def test_a_planned_unit_left_unfilled_is_an_error_at_close(tmp_path):
    w = make_writer(tmp_path, ["cat", "dog"], LAYERS, 5, {}, units=[(0, 5)])
    rows, ok, acts = next(_batches(3, 3, 100, np.random.default_rng(0)))
    w.add(rows, ok, acts)
    with pytest.raises(ValueError, match="unit 0 was planned with 5 files"):
        w.close()


def test_the_layout_places_means_maxima_then_contributions_by_class_then_layer(tmp_path):
    """One ValueLayout: the writer's slices are where the forward puts each block, and each block's table carries its
    layer (and class) in its metadata."""
    attribution = Attribution(("conv4_3", "conv5_3"), ("cat", "dog"), {"conv4_3": 2, "conv5_3": 1}, "m")
    values = ValueLayout(LAYERS, attribution)
    assert [(b.kind, b.layer, b.cls, b.start, b.stop) for b in values.blocks] == [
        ("mean", "conv1_1", None, 0, 3),
        ("mean", "conv5_3", None, 3, 5),
        ("max", "conv1_1", None, 5, 8),
        ("max", "conv5_3", None, 8, 10),
        ("contribution", "conv4_3", "cat", 10, 12),
        ("contribution", "conv5_3", "cat", 12, 13),
        ("contribution", "conv4_3", "dog", 13, 15),
        ("contribution", "conv5_3", "dog", 15, 16),
    ]
    assert values.width == 16
    assert Attribution.from_dict(attribution.to_dict()) == attribution and Attribution.from_dict(None) is None
    assert ValueLayout.from_meta({"layers": LAYERS, "attribution": attribution.to_dict()}) == values
    w = make_writer(tmp_path, ["cat", "dog"], LAYERS, 1, {"x": 1}, attribution)
    rows = {f.name: [None] for f in contract.prediction_schema(["cat", "dog"], False)}
    rows[contract.IMAGE_ID], rows[contract.STATUS] = ["a"], ["ok"]
    w.add(rows, [True], np.arange(16, dtype=np.float32)[None])
    assert pd.read_parquet(contract.attribution_dir(tmp_path, "dog", "conv4_3")).iloc[0].tolist() == ["a", 13, 14]
    assert pd.read_parquet(contract.activation_dir(tmp_path, "conv5_3", "max")).iloc[0].tolist() == ["a", 8, 9]
    meta = json.loads(
        pq.read_schema(contract.attribution_dir(tmp_path, "dog", "conv4_3") / contract.part_name(0)).metadata[
            contract.METADATA_KEY
        ]
    )
    assert meta == {"x": 1, "layer": "conv4_3", "class": "dog"}
    parts = json.loads(manifest.unit_manifest_path(tmp_path, 0).read_text())["parts"]
    assert sorted(parts) == sorted(layout.list_unit_parts(values, 0))  # what finalize asks of every unit


def test_peaks_follow_the_maxima_and_gradcams_the_contributions_as_integers_and_g_columns(tmp_path):
    """The layout's peak blocks (one per layer) and Grad-CAM blocks (one per class, h * w columns); the writer
    writes peaks as uint16 (uint32 past 65,536 cells) and Grad-CAMs as float32 g0..; finalize's list and the unit's
    manifest hold their parts; a run's metadata without "peak_grid" (a run begun before them) has neither."""
    attribution = Attribution(("conv5_3",), ("cat", "dog"), {"conv5_3": 2}, "m")
    values = ValueLayout(
        LAYERS, attribution, {"conv1_1": (300, 300), "conv5_3": (2, 3)}, layout.Gradcam("conv5_3", (2, 2))
    )
    assert [(b.kind, b.layer, b.cls, b.start, b.stop) for b in values.blocks][4:] == [
        ("peak", "conv1_1", None, 10, 13),
        ("peak", "conv5_3", None, 13, 15),
        ("contribution", "conv5_3", "cat", 15, 17),
        ("contribution", "conv5_3", "dog", 17, 19),
        ("gradcam", "conv5_3", "cat", 19, 23),
        ("gradcam", "conv5_3", "dog", 23, 27),
    ]
    meta = json.loads(json.dumps(values.to_meta()))  # as run.json holds it
    assert meta["peak_grid"] == {"conv1_1": [300, 300], "conv5_3": [2, 3]}
    assert meta["gradcam"] == {"layer": "conv5_3", "grid": [2, 2]}
    assert ValueLayout.from_meta(meta) == values
    old = ValueLayout.from_meta({"layers": LAYERS, "attribution": attribution.to_dict()})
    assert {b.kind for b in old.blocks} == {"mean", "max", "contribution"}
    w = UnitWriter(tmp_path, values, UnitSchemas.make(["cat", "dog"], False, values, {"x": 1}), 1)
    rows = {f.name: [None] for f in contract.prediction_schema(["cat", "dog"], False)}
    rows[contract.IMAGE_ID], rows[contract.STATUS] = ["a"], ["ok"]
    sent = np.arange(27, dtype=np.float32)[None] + 60000  # peaks past uint16's range where uint32 holds them
    sent[0, 13:15] = [5, 4]
    w.add(rows, [True], sent)
    wide = pq.read_table(contract.activation_dir(tmp_path, "conv1_1", "peak"))
    assert wide.schema.field("c0").type == "uint32" and wide.column("c2").to_pylist() == [60012]
    narrow = pq.read_table(contract.activation_dir(tmp_path, "conv5_3", "peak"))
    assert narrow.schema.field("c0").type == "uint16" and narrow.drop(["image_id"]).to_pylist() == [{"c0": 5, "c1": 4}]
    cam = pq.read_table(contract.gradcam_dir(tmp_path, "dog", "conv5_3"))
    assert cam.schema.names == ["image_id", "g0", "g1", "g2", "g3"] and cam.schema.field("g0").type == "float"
    assert cam.column("g3").to_pylist() == [60026.0]
    parts = json.loads(manifest.unit_manifest_path(tmp_path, 0).read_text())["parts"]
    assert sorted(parts) == sorted(layout.list_unit_parts(values, 0))
    assert {"activations_peak/conv5_3/part-00000.parquet", "gradcam/cat/conv5_3/part-00000.parquet"} <= set(parts)
