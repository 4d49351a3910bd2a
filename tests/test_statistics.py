"""Channel statistics against independent computations: scipy's Mann-Whitney U, the textbook pooled-sd d, pandas."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from analysis.stats import drivers
from analysis.store import contract
from analysis.stats import selectivity as statistics
from analysis.store.synthetic import write_synthetic_run


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
    acts = pd.read_parquet(contract.activation_dir(out, layer, stat))
    preds = pd.read_parquet(out / contract.PREDICTIONS)[[contract.IMAGE_ID, contract.LABEL, contract.PRED]]
    return acts.merge(preds, on=contract.IMAGE_ID)


@pytest.mark.parametrize("memory_bytes, threads", [(10 ** 9, 1), (3 * 4 * 180 * 2, 2)])  # whole layer; 3 channels
def test_channel_stats_match_independent_computation(tmp_path, memory_bytes, threads):
    labels = [None if i % 7 == 3 else ("cat", "dog")[i % 2] for i in range(190)]  # some images in no class
    out = write_synthetic_run(tmp_path / "run", n_images=190, layers={"conv5_3": 10}, planted=("conv5_3", 6, "dog"),
                              n_errors=10, unit_size=50, labels=labels)
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    groups = statistics.make_groups(preds, ("cat", "dog"))
    assert groups.by == contract.GROUP_LABEL
    got = {k: v for k, v in statistics.compute_table_stats(contract.activation_dir(out, "conv5_3", "mean"), 10,
                                                            groups, memory_bytes, threads).items()}
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
    out = write_synthetic_run(tmp_path / "run", n_images=160, layers={"conv4_3": 12, "conv5_3": 12},
                              planted=("conv5_3", 9, "dog"))
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    stats = statistics.compute_channel_stats(out, {"conv4_3": 12, "conv5_3": 12},
                                             statistics.make_groups(preds, ("cat", "dog")))
    # every column of the table but the drivers', which the report adds from the attribution tables
    selectivity_columns = [c for c in contract.CHANNEL_STATS_COLUMNS if c not in drivers.COLUMNS]
    assert len(stats) == 2 * 2 * 12 * 2 and list(stats.columns) == selectivity_columns
    dog = stats[(stats[contract.LAYER] == "conv5_3") & (stats[contract.STAT] == "mean") & (stats[contract.CLASS] == "dog")]
    top = dog.sort_values(contract.RANK_SELECTIVITY).iloc[0]
    assert top[contract.CHANNEL] == 9 and top[contract.AUC] > 0.95 and top[contract.COHENS_D] > 2
    assert dog.sort_values(contract.RANK_MEAN).iloc[0][contract.CHANNEL] == 9
    others = dog[dog[contract.CHANNEL] != 9]
    assert others[contract.AUC].between(0.3, 0.7).all()  # the others do not separate the classes
    cat = stats[(stats[contract.LAYER] == "conv5_3") & (stats[contract.STAT] == "mean") & (stats[contract.CLASS] == "cat")]
    assert cat.set_index(contract.CHANNEL).loc[9,
                                               contract.RANK_SELECTIVITY] == 12  # least selective for the other class
    np.testing.assert_allclose(cat.set_index(contract.CHANNEL)[contract.AUC],
                               1 - dog.set_index(contract.CHANNEL)[contract.AUC])
    maxima = stats[(stats[contract.LAYER] == "conv5_3") & (stats[contract.STAT] == "max") & (stats[contract.CLASS] == "dog")]
    assert maxima.sort_values(contract.RANK_SELECTIVITY).iloc[0][contract.CHANNEL] == 9


def test_three_classes_and_unlabeled_runs(tmp_path):
    out = write_synthetic_run(tmp_path / "three", n_images=150, layers={"conv5_3": 5}, classes=("a", "b", "c"),
                              planted=("conv5_3", 2, "c"))
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    groups = statistics.make_groups(preds, ("a", "b", "c"))
    got = statistics.compute_table_stats(contract.activation_dir(out, "conv5_3", "mean"), 5, groups, 10 ** 9)
    frame = load_layer(out, "conv5_3", "mean")
    for k, cls in enumerate("abc"):
        a = frame.loc[frame[contract.LABEL] == cls, "c2"].to_numpy(np.float64)
        b = frame.loc[frame[contract.LABEL] != cls, "c2"].to_numpy(np.float64)
        assert got[contract.AUC][k, 2] == pytest.approx(mannwhitneyu(a, b).statistic / (len(a) * len(b)), abs=1e-12)

    out = write_synthetic_run(tmp_path / "unlabeled", n_images=120, layers={"conv5_3": 5}, labeled=False,
                              planted=("conv5_3", 1, "cat"))
    preds = pd.read_parquet(out / contract.PREDICTIONS)
    groups = statistics.make_groups(preds, ("cat", "dog"))
    assert groups.by == contract.GROUP_PRED
    stats = statistics.compute_channel_stats(out, {"conv5_3": 5}, groups)
    cat = stats[(stats[contract.STAT] == "mean") & (stats[contract.CLASS] == "cat")]
    assert cat.sort_values(contract.RANK_SELECTIVITY).iloc[0][contract.CHANNEL] == 1
    assert (stats[contract.GROUP_BY] == contract.GROUP_PRED).all()
    assert cat[contract.N].iloc[0] == (preds[contract.PRED] == "cat").sum()
