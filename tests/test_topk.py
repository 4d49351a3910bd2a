"""Top-k against a sort of the whole table; mistakes and the channel that pushed them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.stats import selectivity, topk
from analysis.stats.groups import make_groups
from analysis.store import contract
from analysis.store.synthetic import SyntheticRun, write_synthetic_run


def full_sort_top(values: np.ndarray, k: int) -> np.ndarray:
    """(C, N) -> (C, k) rows by value descending, then row ascending: the documented order."""
    rows = np.arange(values.shape[1])
    return np.stack([np.lexsort((rows, -v))[:k] for v in values])


def test_running_topk_equals_full_sort_with_ties():
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=(6, 1000)), 1).astype(np.float32)  # many ties
    values[2] = 0.0
    values[4, 500] = np.nan
    values[5, :3] = np.inf
    want = full_sort_top(np.where(np.isnan(values), -np.inf, values), 7)
    run = topk.TopK(7, 6)
    edges = [0, 1, 5, 5, 300, 301, 777, 1000]
    for lo, hi in zip(edges, edges[1:]):
        run.add(values[:, lo:hi], np.arange(lo, hi))
    np.testing.assert_array_equal(run.positions, want)
    np.testing.assert_array_equal(run.values, np.take_along_axis(values, want, 1))
    with pytest.raises(ValueError, match="table order"):
        run.add(values[:, :1], np.arange(1))

    few = topk.TopK(50, 6)
    few.add(values[:, :20], np.arange(20))
    assert few.positions.shape == (6, 20)


def test_scan_layer_equals_full_sort_of_table(tmp_path):
    out = write_synthetic_run(
        tmp_path / "run",
        SyntheticRun(n_images=230, layers={"conv5_3": 12}, planted=("conv5_3", 4, "cat"), n_errors=7, unit_size=40),
    )
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    groups = make_groups(preds, ("cat", "dog"))
    table = contract.activation_dir(out, "conv5_3", "mean")
    channels = [4, 0, 11, 7]
    gather = ["dog.101.jpg", "cat.10.jpg", "no-such-image.jpg"]
    scan = topk.scan_layer(table, channels, groups, k=9, gather=gather, batch_size=16)
    frame = pd.read_parquet(table)
    values = frame[[f"c{c}" for c in channels]].to_numpy().T  # (C, N) in table order
    np.testing.assert_array_equal(scan.top_all.positions, full_sort_top(values, 9))
    np.testing.assert_array_equal(scan.image_ids, frame[contract.IMAGE_ID].to_numpy())
    labels = frame[contract.IMAGE_ID].map(preds.set_index(contract.IMAGE_ID)[contract.LABEL]).to_numpy()
    for k, cls in enumerate(("cat", "dog")):
        rows = np.flatnonzero(labels == cls)
        want = rows[full_sort_top(values[:, rows], 9)]
        np.testing.assert_array_equal(scan.top_class[k].positions, want)
    by_id = frame.set_index(contract.IMAGE_ID)
    np.testing.assert_array_equal(scan.gathered[0], by_id.loc["dog.101.jpg", [f"c{c}" for c in channels]])
    assert np.isnan(scan.gathered[2]).all()

    stats = selectivity.compute_channel_stats(out, {"conv5_3": 12}, groups)
    selected = topk.select_channels(stats, "conv5_3", ("cat", "dog"), 3)
    assert selected["cat"][0] == 4 and len(selected["dog"]) == 3
    scan = topk.scan_layer(table, sorted(set(sum(selected.values(), []))), groups, k=5)
    ex = topk.make_top_examples("conv5_3", scan, selected, ("cat", "dog"))
    assert len(ex) == 2 * 3 * 2 * 5
    cat_all = ex[
        (ex[contract.CLASS] == "cat") & (ex[contract.CHANNEL] == 4) & (ex[contract.SCOPE] == contract.SCOPE_ALL)
    ]
    assert cat_all[contract.IMAGE_RANK].tolist() == [1, 2, 3, 4, 5]
    assert cat_all[contract.VALUE].tolist() == sorted(frame["c4"].nlargest(5).tolist(), reverse=True)
    dog_in = ex[(ex[contract.CLASS] == "dog") & (ex[contract.SCOPE] == contract.SCOPE_CLASS)]
    assert (dog_in[contract.IMAGE_ID].map(preds.set_index(contract.IMAGE_ID)[contract.LABEL]) == "dog").all()


def test_mistakes_and_the_channel_that_pushed_them(tmp_path):
    out = write_synthetic_run(
        tmp_path / "run", SyntheticRun(n_images=200, layers={"conv5_3": 8}, planted=("conv5_3", 5, "dog"))
    )
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    groups = make_groups(preds, ("cat", "dog"))
    mistakes = topk.find_mistakes(preds, groups, 4)
    wrong = preds[(preds[contract.CORRECT] == False)]  # noqa: E712  (a nullable column)
    assert len(mistakes) == min(4, len(wrong)) > 0
    assert mistakes[contract.CONFIDENCE].tolist() == sorted(wrong[contract.CONFIDENCE], reverse=True)[: len(mistakes)]
    stats = selectivity.compute_channel_stats(out, {"conv5_3": 8}, groups)
    selected = topk.select_channels(stats, "conv5_3", ("cat", "dog"), 3)
    table = contract.activation_dir(out, "conv5_3", "mean")
    chans = sorted(set(sum(selected.values(), [])))
    scan = topk.scan_layer(table, chans, groups, k=3, gather=mistakes[contract.IMAGE_ID].tolist())
    ex = topk.make_mistake_examples("conv5_3", mistakes, scan, selected, stats)
    assert len(ex) == len(mistakes) and (ex[contract.SCOPE] == contract.SCOPE_MISTAKE).all()
    s = stats[stats[contract.STAT] == contract.STAT_MEAN].set_index([contract.CLASS, contract.CHANNEL])
    frame = pd.read_parquet(table).set_index(contract.IMAGE_ID)
    for _, row in topk.attach_predictions(ex, preds).iterrows():
        assert row[contract.CLASS] == row[contract.PRED] != row[contract.LABEL]
        zs = {
            c: (frame.loc[row[contract.IMAGE_ID], f"c{c}"] - s.loc[(row[contract.LABEL], c), contract.MEAN])
            / s.loc[(row[contract.LABEL], c), contract.STD]
            for c in selected[row[contract.PRED]]
        }
        assert row[contract.CHANNEL] == max(zs, key=zs.get)
        assert abs(row[contract.PUSH] - zs[row[contract.CHANNEL]]) < 1e-6

    unlabeled = write_synthetic_run(tmp_path / "u", SyntheticRun(n_images=40, layers={"conv5_3": 4}, labeled=False))
    p = pd.read_parquet(unlabeled / contract.PREDICTIONS)
    assert topk.find_mistakes(p, make_groups(p, ("cat", "dog")), 5).empty
