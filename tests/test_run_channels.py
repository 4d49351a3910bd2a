"""The inspect page's view of a dataset run: the report's ranking (read or computed the same way), percentiles."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import drivers, selectivity
from analysis.stats.groups import make_groups
from analysis.stats.run_channels import compare_with_run, compute_percentile, describe_mismatch, read_selective_channels
from analysis.store import contract, tables
from analysis.store.run import read_finished_run
from analysis.store.synthetic import SyntheticRun, write_synthetic_run

LAYERS = {"conv4_3": 16, "conv5_3": 16}


@pytest.fixture
def run(tmp_path):
    return write_synthetic_run(
        tmp_path / "run",
        SyntheticRun(n_images=60, layers=LAYERS, planted=("conv5_3", 5, "cat"), n_errors=3, unit_size=16),
    )


def test_computed_ranking_equals_the_reports_and_puts_the_planted_channel_first(run):
    got = read_selective_channels(read_finished_run(run), "conv5_3", "cat", 4)
    assert got.channels[0] == 5 and got.score_name == "ROC AUC" and got.group_by == "label"
    assert "no report yet" in got.source
    preds = pd.read_parquet(run / "predictions")
    df = selectivity.compute_channel_stats(run, LAYERS, make_groups(preds, ["cat", "dog"]))
    df = df[(df[contract.LAYER] == "conv5_3") & (df[contract.STAT] == "mean") & (df[contract.CLASS] == "cat")]
    assert list(got.channels) == list(df.sort_values(contract.RANK_SELECTIVITY)[contract.CHANNEL][:4])


def test_the_reports_table_is_read_when_present(run):
    preds = pd.read_parquet(run / "predictions")
    groups = make_groups(preds, ["cat", "dog"])
    df = drivers.add_drivers(
        selectivity.compute_channel_stats(run, LAYERS, groups), drivers.compute_drivers(run, None, groups, groups)
    )  # a run without attribution
    df[contract.RANK_SELECTIVITY] = (
        df[contract.RANK_SELECTIVITY].max() + 1 - df[contract.RANK_SELECTIVITY]
    )  # reversed: a marker
    tables.write_table(df, contract.CHANNEL_STATS_SCHEMA, run / contract.REPORT_DIR / contract.CHANNEL_STATS)
    got = read_selective_channels(read_finished_run(run), "conv5_3", "cat", 2)
    assert got.source == f"{contract.REPORT_DIR}/{contract.CHANNEL_STATS}" and got.channels[-1] != 5


def test_what_cannot_be_ranked_says_why(run):
    finished = read_finished_run(run)
    assert "recorded no conv1_1" in read_selective_channels(finished, "conv1_1", "cat", 3)
    assert "not among the run's classes" in read_selective_channels(finished, "conv5_3", "bird", 3)
    comp = compare_with_run(finished, "conv1_1", np.zeros(64, np.float32), "cat", 3)
    assert comp.ranking is None and comp.channels == () and "conv1_1" in comp.reason


def test_percentile_matches_scipy_and_comparison_uses_the_runs_values(run):
    values = np.array([0, 0, 1, 2, 2, 2, 5], np.float32)
    for v in (-1, 0, 1, 2, 3, 5, 9):
        assert compute_percentile(values, v) == pytest.approx(stats.percentileofscore(values, v, kind="mean"))
    means = np.linspace(0, 3, 16).astype(np.float32)
    comp = compare_with_run(read_finished_run(run), "conv5_3", means, "cat", 2)
    run_means = pd.read_parquet(run / "activations" / "conv5_3")
    run_max = pd.read_parquet(run / "activations_max" / "conv5_3")
    for ch in comp.channels:
        np.testing.assert_array_equal(np.sort(ch.run_values), np.sort(run_means[f"c{ch.channel}"].to_numpy()))
        assert ch.value == means[ch.channel]
        assert ch.vmax == pytest.approx(np.percentile(run_max[f"c{ch.channel}"], 99))


def test_mismatch_is_described():
    imagenet = "torchvision:VGG16_Weights.IMAGENET1K_V1"
    meta = {"weights": {"id": imagenet}, "preprocess": {"name": "imagenet", "crop": 224}}
    assert describe_mismatch(meta, imagenet, {"name": "imagenet", "crop": 224}) == []
    lines = describe_mismatch(meta, "random(seed=0)", {"name": "imagenet", "crop": 64})
    assert len(lines) == 2 and "random(seed=0)" in lines[0] and "crop is 224" in lines[1]
