"""The report's drivers: channels ranked by contribution to the class, against a head that reads one channel only,
and against an independent mean over the attribution tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.model.vgg16 import make_vgg16
from jobs import cli, report
from tests.helpers import make_flat
from tests.small_runs import run

pytestmark = pytest.mark.slow  # extract and report end to end

REPORT = [
    "--device",
    "cpu",
    "--no-progress",
    "--no-overlays",
    "--layers",
    "conv5_3",
    "--set",
    "top_channels=2",
    "--set",
    "top_images=2",
]


def planted_checkpoint(path, channel: int, seed: int = 0):
    """A 2-way VGG16 whose logits read conv5_3 channel `channel` only: logit_dog = +h, logit_cat = -h."""
    torch.manual_seed(seed)
    model = make_vgg16(2)
    state = model.state_dict()
    w1 = torch.zeros_like(state["classifier.0.weight"])  # (4096, 512 * 7 * 7), channel-major after flatten
    w1[0, channel * 49 : (channel + 1) * 49] = 1.0
    w2 = torch.zeros_like(state["classifier.3.weight"])
    w2[0, 0] = 1.0
    w3 = torch.zeros_like(state["classifier.6.weight"])
    w3[0, 0], w3[1, 0] = -1.0, 1.0  # classes cat, dog
    state.update({"classifier.0.weight": w1, "classifier.3.weight": w2, "classifier.6.weight": w3})
    for name in ("classifier.0.bias", "classifier.3.bias", "classifier.6.bias"):
        state[name] = torch.zeros_like(state[name])
    torch.save(state, path)
    return path


def run_with_head(tmp_path, data, channel: int) -> pd.DataFrame:
    out = tmp_path / f"out{channel}"
    ckpt = planted_checkpoint(tmp_path / f"head{channel}.pth", channel)
    assert (
        run(
            data,
            out,
            "--weights",
            str(ckpt),
            "--classes",
            "cat,dog",
            "--layers",
            "conv5_3",
            "--attribution-layers",
            "conv5_3",
        )
        == 0
    )
    assert cli.run_main(report.parse, report.main, "report", ["--run", str(out), *REPORT]) == 0
    stats = pd.read_parquet(out / "report" / "channel_stats.parquet")
    return stats[(stats.layer == "conv5_3") & (stats.stat == "mean")].set_index(["class", "channel"])


def test_a_head_that_reads_one_channel_makes_it_the_driver_whatever_its_selectivity(tmp_path):
    data = make_flat(tmp_path / "train", 8)
    # The convolutions, so the activations and the selectivity, are the same whatever the head: find the channel
    # least selective for dog, then plant the head on it.
    first = run_with_head(tmp_path, data, channel=0)
    least = int(first.loc["dog"].rank_selectivity.idxmax())
    stats = run_with_head(tmp_path, data, channel=least).loc["dog"]
    assert stats.loc[least, "rank_contribution"] == 1
    assert stats.loc[least, "rank_selectivity"] == 512  # the least selective channel drives the class
    assert stats.loc[least, "contrib_mean"] > 0
    assert (stats.drop(index=least).contrib_mean == 0).all()  # no other channel reaches the logit at all


def test_drivers_are_the_class_means_of_the_attribution_tables(tmp_path):
    data = make_flat(tmp_path / "train", 6)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv5_3", "--attribution-layers", "conv5_3") == 0
    assert cli.run_main(report.parse, report.main, "report", ["--run", str(out), *REPORT]) == 0
    stats = pd.read_parquet(out / "report" / "channel_stats.parquet")
    preds = pd.read_parquet(out / "predictions").set_index("image_id")
    for cls in ("cat", "dog"):
        contrib = pd.read_parquet(out / "attributions" / cls / "conv5_3").set_index("image_id")
        mine = stats[(stats.layer == "conv5_3") & (stats.stat == "max") & (stats["class"] == cls)].set_index("channel")
        of_class = contrib.loc[preds.index[preds.label == cls]].to_numpy(np.float64)
        np.testing.assert_allclose(mine.contrib_mean.to_numpy(), of_class.mean(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(mine.contrib_std.to_numpy(), of_class.std(axis=0, ddof=1), rtol=1e-6, atol=1e-12)
        expected_first = int(np.argmax(of_class.mean(axis=0)))
        assert mine.rank_contribution.idxmin() == expected_first
        predicted = contrib.loc[preds.index[preds.pred == cls]].to_numpy(np.float64)
        if len(predicted):
            np.testing.assert_allclose(mine.contrib_mean_pred.to_numpy(), predicted.mean(axis=0), rtol=1e-9)
        else:
            assert mine.contrib_mean_pred.isna().all() and mine.rank_contribution_pred.isna().all()


def test_mistakes_name_their_wrong_class_drivers_and_every_shown_image_gets_its_gradcam(tmp_path):
    from analysis.stats.drivers import compute_mistake_drivers

    data = make_flat(tmp_path / "train", 6)
    out = tmp_path / "out"
    assert run(data, out, "--weights", "random", "--layers", "conv5_3", "--attribution-layers", "conv5_3") == 0
    args = [
        "--run",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--layers",
        "conv5_3",
        "--set",
        "top_channels=2",
        "--set",
        "top_images=2",
        "--set",
        "mistakes=3",
    ]
    assert cli.run_main(report.parse, report.main, "report", args) == 0
    examples = pd.read_parquet(out / "report" / "top_examples.parquet")
    mistakes = examples[examples.scope == "mistake"]
    assert len(mistakes)  # random weights answer one class: there are mistakes
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    wrong = compute_mistake_drivers(out, {"layers": ["conv5_3"], "classes": ["cat", "dog"]}, mistakes)
    for _, m in mistakes.iterrows():
        contrib = pd.read_parquet(out / "attributions" / m.pred / "conv5_3").set_index("image_id").loc[m.image_id]
        top = [int(c[1:]) for c in contrib.sort_values(ascending=False, kind="stable").index[:3]]
        assert [c for c, _ in wrong[(m.image_id, "conv5_3")]] == top
        assert f"drove {m.pred} most: c{top[0]} (" in html
    assert not list((out / "report" / "tiles").glob("gradcam-*.jpg"))  # Grad-CAM: in the cards, from the run
