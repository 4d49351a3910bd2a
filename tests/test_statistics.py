"""Channel statistics against independent computations: scipy's Mann-Whitney U, the textbook pooled-sd d, pandas."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from analysis import report_tables as rt
from analysis import statistics, storage
from tests.synthetic_run import write_synthetic_run


def textbook_d(a: np.ndarray, b: np.ndarray) -> float:
    n1, n0 = len(a), len(b)
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n0 - 1) * b.var(ddof=1)) / (n1 + n0 - 2))
    return (a.mean() - b.mean()) / pooled


def test_rank_auc_matches_mann_whitney_with_ties():
    rng = np.random.default_rng(1)
    values = np.round(np.maximum(rng.normal(size=(7, 301)), 0), 1).astype(np.float32)  # many ties, many zeros
    values[3] = 0.0                     # a dead channel: every value tied
    values[4] = -values[4]              # negative values and -0.0
    member = rng.random(301) < 0.4
    auc = statistics.compute_rank_auc(values, member)
    for j in range(len(values)):
        u = mannwhitneyu(values[j, member], values[j, ~member]).statistic
        assert auc[j] == pytest.approx(u / (member.sum() * (~member).sum()), abs=1e-12)
    assert auc[3] == 0.5


def test_moments_merge_equals_whole():
    rng = np.random.default_rng(2)
    values = rng.normal(3, 2, size=(5, 400)).astype(np.float32)
    codes = rng.integers(0, 3, 400)
    whole = statistics.Moments.empty(3, 5)
    whole.add(values, codes)
    a, b = statistics.Moments.empty(3, 5), statistics.Moments.empty(3, 5)
    a.add(values[:, :123], codes[:123])
    b.add(values[:, 123:], codes[123:])
    a.merge(b)
    for k in range(3):
        x = values[:, codes == k].astype(np.float64)
        np.testing.assert_allclose(a.mean[k], x.mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(a.std()[k], x.std(axis=1, ddof=1), rtol=1e-10)
        np.testing.assert_allclose(whole.std()[k], x.std(axis=1, ddof=1), rtol=1e-10)


def load_layer(out, layer, stat):
    acts = pd.read_parquet(storage.activation_dir(out, layer, stat))
    preds = pd.read_parquet(out / storage.PREDICTIONS)[[storage.IMAGE_ID, storage.LABEL, storage.PRED]]
    return acts.merge(preds, on=storage.IMAGE_ID)


@pytest.mark.parametrize("memory_bytes, threads", [(10 ** 9, 1), (3 * 4 * 180 * 2, 2)])  # whole layer; 3 channels
def test_channel_stats_match_independent_computation(tmp_path, memory_bytes, threads):
    labels = [None if i % 7 == 3 else ("cat", "dog")[i % 2] for i in range(190)]  # some images in no class
    out = write_synthetic_run(tmp_path / "run", n_images=190, layers={"conv5_3": 10}, planted=("conv5_3", 6, "dog"),
                              n_errors=10, unit_size=50, labels=labels)
    preds = pd.read_parquet(out / storage.PREDICTIONS)
    groups = statistics.make_groups(preds, ("cat", "dog"))
    assert groups.by == rt.GROUP_LABEL
    got = {k: v for k, v in statistics.compute_table_stats(storage.activation_dir(out, "conv5_3", "mean"), 10,
                                                            groups, memory_bytes, threads).items()}
    frame = load_layer(out, "conv5_3", "mean")
    for k, cls in enumerate(("cat", "dog")):
        labeled = frame[frame[storage.LABEL].notna()]
        inside, rest = labeled[labeled[storage.LABEL] == cls], labeled[labeled[storage.LABEL] != cls]
        assert got[rt.N][k] == len(inside) == (np.array(labels[10:]) == cls).sum()
        for c in range(10):
            a, b = inside[f"c{c}"].to_numpy(np.float64), rest[f"c{c}"].to_numpy(np.float64)
            assert got[rt.MEAN][k, c] == pytest.approx(a.mean(), rel=1e-9)
            assert got[rt.STD][k, c] == pytest.approx(a.std(ddof=1), rel=1e-9)
            assert got[rt.COHENS_D][k, c] == pytest.approx(textbook_d(a, b), rel=1e-9)
            u = mannwhitneyu(a, b).statistic
            assert got[rt.AUC][k, c] == pytest.approx(u / (len(a) * len(b)), abs=1e-12)


def test_planted_channel_ranks_first(tmp_path):
    out = write_synthetic_run(tmp_path / "run", n_images=160, layers={"conv4_3": 12, "conv5_3": 12},
                              planted=("conv5_3", 9, "dog"))
    preds = pd.read_parquet(out / storage.PREDICTIONS)
    stats = statistics.compute_channel_stats(out, {"conv4_3": 12, "conv5_3": 12},
                                             statistics.make_groups(preds, ("cat", "dog")))
    assert len(stats) == 2 * 2 * 12 * 2 and list(stats.columns[:len(rt.CHANNEL_STATS_COLUMNS)]) == list(
        rt.CHANNEL_STATS_COLUMNS)
    dog = stats[(stats[rt.LAYER] == "conv5_3") & (stats[rt.STAT] == "mean") & (stats[rt.CLASS] == "dog")]
    top = dog.sort_values(rt.RANK_SELECTIVITY).iloc[0]
    assert top[rt.CHANNEL] == 9 and top[rt.AUC] > 0.95 and top[rt.COHENS_D] > 2
    assert dog.sort_values(rt.RANK_MEAN).iloc[0][rt.CHANNEL] == 9
    others = dog[dog[rt.CHANNEL] != 9]
    assert others[rt.AUC].between(0.3, 0.7).all()  # the others do not separate the classes
    cat = stats[(stats[rt.LAYER] == "conv5_3") & (stats[rt.STAT] == "mean") & (stats[rt.CLASS] == "cat")]
    assert cat.set_index(rt.CHANNEL).loc[9, rt.RANK_SELECTIVITY] == 12  # least selective for the other class
    np.testing.assert_allclose(cat.set_index(rt.CHANNEL)[rt.AUC], 1 - dog.set_index(rt.CHANNEL)[rt.AUC])
    maxima = stats[(stats[rt.LAYER] == "conv5_3") & (stats[rt.STAT] == "max") & (stats[rt.CLASS] == "dog")]
    assert maxima.sort_values(rt.RANK_SELECTIVITY).iloc[0][rt.CHANNEL] == 9


def test_three_classes_and_unlabeled_runs(tmp_path):
    out = write_synthetic_run(tmp_path / "three", n_images=150, layers={"conv5_3": 5}, classes=("a", "b", "c"),
                              planted=("conv5_3", 2, "c"))
    preds = pd.read_parquet(out / storage.PREDICTIONS)
    groups = statistics.make_groups(preds, ("a", "b", "c"))
    got = statistics.compute_table_stats(storage.activation_dir(out, "conv5_3", "mean"), 5, groups, 10 ** 9)
    frame = load_layer(out, "conv5_3", "mean")
    for k, cls in enumerate("abc"):
        a = frame.loc[frame[storage.LABEL] == cls, "c2"].to_numpy(np.float64)
        b = frame.loc[frame[storage.LABEL] != cls, "c2"].to_numpy(np.float64)
        assert got[rt.AUC][k, 2] == pytest.approx(mannwhitneyu(a, b).statistic / (len(a) * len(b)), abs=1e-12)

    out = write_synthetic_run(tmp_path / "unlabeled", n_images=120, layers={"conv5_3": 5}, labeled=False,
                              planted=("conv5_3", 1, "cat"))
    preds = pd.read_parquet(out / storage.PREDICTIONS)
    groups = statistics.make_groups(preds, ("cat", "dog"))
    assert groups.by == rt.GROUP_PRED
    stats = statistics.compute_channel_stats(out, {"conv5_3": 5}, groups)
    cat = stats[(stats[rt.STAT] == "mean") & (stats[rt.CLASS] == "cat")]
    assert cat.sort_values(rt.RANK_SELECTIVITY).iloc[0][rt.CHANNEL] == 1
    assert (stats[rt.GROUP_BY] == rt.GROUP_PRED).all()
    assert cat[rt.N].iloc[0] == (preds[storage.PRED] == "cat").sum()
