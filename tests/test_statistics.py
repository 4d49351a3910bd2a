"""Channel statistics against independent computations: scipy's Mann-Whitney U, the textbook pooled-sd d, numpy's
moments, pandas' grouping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from analysis.stats import drivers, selectivity
from analysis.stats.groups import make_groups
from analysis.stats.moments import Moments
from analysis.store import contract
from analysis.store.synthetic import SyntheticRun, write_synthetic_run


def textbook_d(a: np.ndarray, b: np.ndarray) -> float:
    n1, n0 = len(a), len(b)
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n0 - 1) * b.var(ddof=1)) / (n1 + n0 - 2))
    return (a.mean() - b.mean()) / pooled


def test_rank_auc_matches_mann_whitney_with_ties():
    rng = np.random.default_rng(1)
    values = np.round(np.maximum(rng.normal(size=(7, 301)), 0), 1).astype(np.float32)  # many ties, many zeros
    values[3] = 0.0  # a dead channel: every value tied
    values[4] = -values[4]  # negative values and -0.0
    member = rng.random(301) < 0.4
    auc = selectivity.compute_rank_auc(values, member)
    for j in range(len(values)):
        u = mannwhitneyu(values[j, member], values[j, ~member]).statistic
        assert auc[j] == pytest.approx(u / (member.sum() * (~member).sum()), abs=1e-12)
    assert auc[3] == 0.5


def test_moments_over_batches_equal_numpys():
    rng = np.random.default_rng(2)
    values = rng.normal(3, 2, size=(5, 400)).astype(np.float32)
    codes = rng.integers(-1, 3, 400)  # -1: in no class
    whole = Moments.empty(3, 5)
    whole.add(values, codes)
    batched = Moments.empty(3, 5)
    for lo, hi in ((0, 123), (123, 124), (124, 124), (124, 400)):  # batches as the streamed tables give them
        batched.add(values[:, lo:hi], codes[lo:hi])
    for k in range(3):
        x = values[:, codes == k].astype(np.float64)
        for m in (whole, batched):
            assert m.n[k] == x.shape[1]
            np.testing.assert_allclose(m.mean[k], x.mean(axis=1), rtol=1e-12)
            np.testing.assert_allclose(m.std()[k], x.std(axis=1, ddof=1), rtol=1e-10)
        rest = values[:, (codes >= 0) & (codes != k)].astype(np.float64)
        np.testing.assert_allclose(batched.rest(k).mean[0], rest.mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(batched.rest(k).std()[0], rest.std(axis=1, ddof=1), rtol=1e-10)


def test_groups_by_label_and_by_prediction_match_pandas():
    preds = pd.DataFrame(
        {
            contract.IMAGE_ID: list("abcdefg"),
            contract.STATUS: ["ok", "ok", "ok", "error", "ok", "ok", "ok"],
            contract.LABEL: ["dog", None, "cat", "cat", "bird", "dog", None],
            contract.PRED: ["cat", "dog", "cat", None, "dog", "bird", "dog"],
        }
    )
    classes = ("cat", "dog")
    ok = preds[preds[contract.STATUS] == "ok"]
    for by, column in ((contract.GROUP_LABEL, contract.LABEL), (contract.GROUP_PRED, contract.PRED)):
        groups = make_groups(preds, classes, by)
        want = {i: classes.index(c) for i, c in zip(ok[contract.IMAGE_ID], ok[column]) if c in classes}
        assert groups.by == by and groups.code.to_dict() == want
        assert groups.codes_of(list("abcdefgz")).tolist() == [want.get(i, -1) for i in "abcdefgz"]
    assert make_groups(preds, classes).by == contract.GROUP_LABEL  # some labels among the classes
    assert make_groups(preds.assign(**{contract.LABEL: None}), classes).by == contract.GROUP_PRED
    with pytest.raises(ValueError, match="by='labels'"):
        make_groups(preds, classes, "labels")


def load_layer(out, layer, stat):
    acts = pd.read_parquet(contract.activation_dir(out, layer, stat))
    preds = pd.read_parquet(out / contract.PREDICTIONS)[[contract.IMAGE_ID, contract.LABEL, contract.PRED]]
    return acts.merge(preds, on=contract.IMAGE_ID)


@pytest.mark.parametrize("memory_bytes, threads", [(10**9, 1), (3 * 4 * 180 * 2, 2)])  # whole layer; 3 channels
def test_channel_stats_match_independent_computation(tmp_path, memory_bytes, threads):
    labels = [None if i % 7 == 3 else ("cat", "dog")[i % 2] for i in range(190)]  # some images in no class
    out = write_synthetic_run(
        tmp_path / "run",
        SyntheticRun(
            n_images=190,
            layers={"conv5_3": 10},
            planted=("conv5_3", 6, "dog"),
            n_errors=10,
            unit_size=50,
            labels=labels,
        ),
    )
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    groups = make_groups(preds, ("cat", "dog"))
    assert groups.by == contract.GROUP_LABEL
    got = selectivity.compute_table_stats(
        contract.activation_dir(out, "conv5_3", "mean"), 10, groups, memory_bytes, threads
    )
    frame = load_layer(out, "conv5_3", "mean")
    for k, cls in enumerate(("cat", "dog")):
        labeled = frame[frame[contract.LABEL].notna()]
        inside, rest = labeled[labeled[contract.LABEL] == cls], labeled[labeled[contract.LABEL] != cls]
        assert got[contract.N][k] == len(inside) == (np.array(labels[10:]) == cls).sum()
        for c in range(10):
            a, b = inside[f"c{c}"].to_numpy(np.float64), rest[f"c{c}"].to_numpy(np.float64)
            assert got[contract.MEAN][k, c] == pytest.approx(a.mean(), rel=1e-9)
            assert got[contract.STD][k, c] == pytest.approx(a.std(ddof=1), rel=1e-9)
            assert got[contract.COHENS_D][k, c] == pytest.approx(textbook_d(a, b), rel=1e-9)
            u = mannwhitneyu(a, b).statistic
            assert got[contract.AUC][k, c] == pytest.approx(u / (len(a) * len(b)), abs=1e-12)


def test_planted_channel_ranks_first(tmp_path):
    out = write_synthetic_run(
        tmp_path / "run",
        SyntheticRun(n_images=160, layers={"conv4_3": 12, "conv5_3": 12}, planted=("conv5_3", 9, "dog")),
    )
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    stats = selectivity.compute_channel_stats(out, {"conv4_3": 12, "conv5_3": 12}, make_groups(preds, ("cat", "dog")))
    # every column of the table but the drivers', which the report adds from the attribution tables
    selectivity_columns = [c for c in contract.CHANNEL_STATS_COLUMNS if c not in drivers.COLUMNS]
    assert len(stats) == 2 * 2 * 12 * 2 and list(stats.columns) == selectivity_columns
    conv5 = stats[stats[contract.LAYER] == "conv5_3"]
    dog = conv5[(conv5[contract.STAT] == "mean") & (conv5[contract.CLASS] == "dog")]
    top = dog.sort_values(contract.RANK_SELECTIVITY).iloc[0]
    assert top[contract.CHANNEL] == 9 and top[contract.AUC] > 0.95 and top[contract.COHENS_D] > 2
    assert dog.sort_values(contract.RANK_MEAN).iloc[0][contract.CHANNEL] == 9
    others = dog[dog[contract.CHANNEL] != 9]
    assert others[contract.AUC].between(0.3, 0.7).all()  # the others do not separate the classes
    cat = conv5[(conv5[contract.STAT] == "mean") & (conv5[contract.CLASS] == "cat")]
    assert cat.set_index(contract.CHANNEL).loc[9, contract.RANK_SELECTIVITY] == 12  # least selective for the other
    frame = load_layer(out, "conv5_3", "mean")
    for cls, rows in (("cat", cat), ("dog", dog)):  # the second of two classes is not sorted for: check it too
        for c, auc in rows.set_index(contract.CHANNEL)[contract.AUC].items():
            a = frame.loc[frame[contract.LABEL] == cls, f"c{c}"].to_numpy(np.float64)
            b = frame.loc[frame[contract.LABEL] != cls, f"c{c}"].to_numpy(np.float64)
            assert auc == pytest.approx(mannwhitneyu(a, b).statistic / (len(a) * len(b)), abs=1e-12)
    maxima = conv5[(conv5[contract.STAT] == "max") & (conv5[contract.CLASS] == "dog")]
    assert maxima.sort_values(contract.RANK_SELECTIVITY).iloc[0][contract.CHANNEL] == 9


def test_three_classes_and_unlabeled_runs(tmp_path):
    out = write_synthetic_run(
        tmp_path / "three",
        SyntheticRun(n_images=150, layers={"conv5_3": 5}, classes=("a", "b", "c"), planted=("conv5_3", 2, "c")),
    )
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    groups = make_groups(preds, ("a", "b", "c"))
    got = selectivity.compute_table_stats(contract.activation_dir(out, "conv5_3", "mean"), 5, groups, 10**9)
    frame = load_layer(out, "conv5_3", "mean")
    for k, cls in enumerate("abc"):
        a = frame.loc[frame[contract.LABEL] == cls, "c2"].to_numpy(np.float64)
        b = frame.loc[frame[contract.LABEL] != cls, "c2"].to_numpy(np.float64)
        assert got[contract.AUC][k, 2] == pytest.approx(mannwhitneyu(a, b).statistic / (len(a) * len(b)), abs=1e-12)

    out = write_synthetic_run(
        tmp_path / "unlabeled",
        SyntheticRun(n_images=120, layers={"conv5_3": 5}, labeled=False, planted=("conv5_3", 1, "cat")),
    )
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    groups = make_groups(preds, ("cat", "dog"))
    assert groups.by == contract.GROUP_PRED
    stats = selectivity.compute_channel_stats(out, {"conv5_3": 5}, groups)
    cat = stats[(stats[contract.STAT] == "mean") & (stats[contract.CLASS] == "cat")]
    assert cat.sort_values(contract.RANK_SELECTIVITY).iloc[0][contract.CHANNEL] == 1
    assert (stats[contract.GROUP_BY] == contract.GROUP_PRED).all()
    assert cat[contract.N].iloc[0] == (preds[contract.PRED] == "cat").sum()
