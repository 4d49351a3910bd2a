"""Labels given to the report (`--labels` at report time): the statistics, accuracy and banner they give, where they
are recorded, labels outside the classes and ids that match no image, and a bad CSV. The banner for weights that
are not what their name says is in test_unverified_weights.py."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.config import ConfigError
from analysis.stats.relabel import describe_unmatched, relabel_predictions
from analysis.stats.run_channels import read_selective_channels
from analysis.store import contract, manifest
from analysis.store.run import read_finished_run
from analysis.store.synthetic import SyntheticRun, make_image_ids, write_synthetic_run
from jobs import cli, out_folder, report
from tests.small_runs import make_report

CLASSES = ("cat", "dog")

N = 40

HOSTILE = ("Cat/0.jpg", "Dog/1.jpg")  # ids with a folder, for the CSV's Windows spelling

GHOST = "<img src=x onerror=alert(1)>.jpg"  # an id of the CSV that matches no image: named on the page, as text


def read_meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[contract.METADATA_KEY])


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory):
    """An unlabeled synthetic run, reported with a CSV that labels it: most ids as written, one in Windows spelling,
    one label in capitals, one outside the classes, one id that matches no image; two images not named."""
    root = tmp_path_factory.mktemp("relabel")
    run = write_synthetic_run(
        root / "run",
        SyntheticRun(n_images=N, layers={"conv5_3": 8}, labeled=False, hostile=HOSTILE, planted=("conv5_3", 3, "dog")),
    )
    ids = make_image_ids(N, CLASSES, HOSTILE)
    rng = np.random.default_rng(7)
    truth = {i: ("cat", "dog")[int(b)] for i, b in zip(ids, rng.integers(0, 2, N))}  # not the predictions
    truth[ids[5]] = "kitten"  # outside the classes
    del truth[ids[6]], truth[ids[7]]  # not named: stay unlabeled
    rows = [
        ("Cat\\0.jpg" if i == "Cat/0.jpg" else i, "DOG" if i == ids[8] and lab == "dog" else lab)
        for i, lab in truth.items()
    ] + [("nope/ghost.jpg", "cat"), (GHOST, "dog")]
    csv = root / "fixed labels.csv"
    csv.write_text("image_id,label\n" + "".join(f"{i},{lab}\n" for i, lab in rows), encoding="utf-8")
    handler = _Capture()
    logging.getLogger("cnn_blackbox").addHandler(handler)
    try:
        out = make_report(run, labels=str(csv))
    finally:
        logging.getLogger("cnn_blackbox").removeHandler(handler)
    return {
        "run": run,
        "out": out,
        "csv": csv,
        "truth": truth,
        "log": "\n".join(handler.lines),
        "html": (out / contract.INDEX_HTML).read_text(encoding="utf-8"),
    }


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.mark.slow
def test_report_labels_change_the_class_statistics_to_a_groupby_with_the_csv(relabelled):
    """channel_stats against pandas: the activations grouped by the CSV's labels (images not named keep none)."""
    acts = pd.read_parquet(contract.activation_dir(relabelled["run"], "conv5_3", "mean")).set_index(contract.IMAGE_ID)
    label = pd.Series(relabelled["truth"]).reindex(acts.index)
    grouped = acts[label.isin(CLASSES)].groupby(label[label.isin(CLASSES)])
    stats = pd.read_parquet(relabelled["out"] / contract.CHANNEL_STATS)
    s = stats[(stats[contract.LAYER] == "conv5_3") & (stats[contract.STAT] == contract.STAT_MEAN)]
    assert set(s[contract.GROUP_BY]) == {contract.GROUP_LABEL}  # the run alone would group by prediction
    for cls in CLASSES:
        got = s[s[contract.CLASS] == cls].set_index(contract.CHANNEL).sort_index()
        assert (got[contract.N] == grouped.size()[cls]).all()
        np.testing.assert_allclose(got[contract.MEAN], grouped.mean().loc[cls].to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(got[contract.STD], grouped.std(ddof=1).loc[cls].to_numpy(), rtol=1e-5)


@pytest.mark.slow
def test_report_labels_give_the_accuracy_and_the_banner(relabelled):
    preds = pd.read_parquet(relabelled["run"] / contract.PREDICTIONS).set_index(contract.IMAGE_ID)
    label = pd.Series(relabelled["truth"]).reindex(preds.index)
    known = label.isin(CLASSES)
    accuracy = (preds[contract.PRED][known] == label[known]).mean()
    html = relabelled["html"]
    assert f"Accuracy {accuracy:.1%} on {known.sum()} labeled images." in html
    assert f"Labels from <code>{relabelled['csv']}</code>, given to this report (--labels)" in html
    assert f"of {N} images relabelled ({N - 2} of the CSV&#39;s {N} ids match an image)" in html
    assert "grouped by label" in html


@pytest.mark.slow
def test_report_labels_are_recorded_in_every_table(relabelled):
    digest = hashlib.sha256(relabelled["csv"].read_bytes()).hexdigest()
    for name in (contract.CHANNEL_STATS, contract.TOP_EXAMPLES, contract.DATASET_ISSUES):
        labels = read_meta(relabelled["out"] / name)["labels"]
        assert (labels["source"], labels["csv"], labels["sha256"]) == ("report", str(relabelled["csv"]), digest), name
    # make inspect --run ranks by this report's table, and says by whose labels
    ranking = read_selective_channels(read_finished_run(relabelled["run"]), "conv5_3", "dog", 3)
    assert ranking.source.endswith(f"labels from {relabelled['csv']} given to the report")
    # the run's own tables are untouched: the labels are the report's, not the run's
    assert pd.read_parquet(relabelled["run"] / contract.PREDICTIONS)[contract.LABEL].isna().all()


@pytest.mark.slow
def test_unknown_ids_are_named_and_labels_outside_the_classes_counted(relabelled):
    assert f"2 ids match no image of the run: 'nope/ghost.jpg', '{GHOST}'" in relabelled["log"]
    line = "1 image carries labels outside the classes cat, dog: 'kitten' (1)"
    assert line in relabelled["log"]
    assert line.replace("'", "&#39;") in relabelled["html"]
    assert (
        "2 ids match no image: &#39;nope/ghost.jpg&#39;, &#39;&lt;img src=x onerror=alert(1)&gt;.jpg&#39;"
        in relabelled["html"]
    )
    assert GHOST not in relabelled["html"]
    stats = pd.read_parquet(relabelled["out"] / contract.CHANNEL_STATS)
    assert stats[contract.N].max() <= N - 3  # kitten, and the two not named, are in no class


def test_relabel_keeps_outside_labels_and_nulls_their_correct():
    p = pd.DataFrame(
        {
            contract.IMAGE_ID: ["a", "b", "c", "d", "e"],
            contract.LABEL: ["cat", None, "dog", "dog", "cat"],
            contract.STATUS: ["ok", "ok", "ok", "error", "ok"],
            contract.PRED: ["cat", "dog", "dog", None, "cat"],
            contract.CORRECT: [True, None, True, None, True],
        }
    )
    before = p.copy()
    out, changed = relabel_predictions(p, {"a": "fox", "b": "dog", "c": "cat", "d": "cat"}, CLASSES)
    assert list(out[contract.LABEL]) == ["fox", "dog", "cat", "cat", "cat"]
    assert list(out[contract.CORRECT]) == [None, True, False, None, True]  # outside, right, wrong, error, kept
    assert changed == 4
    pd.testing.assert_frame_equal(p, before)  # the input untouched


def test_unmatched_ids_name_the_first_ten_and_count_the_rest():
    ids = [f"x/{k}.jpg" for k in range(13)]
    line = describe_unmatched("l.csv", ids)
    assert "13 ids match no image" in line and "'x/9.jpg'" in line and "'x/10.jpg'" not in line
    assert "'x/9.jpg' and 3 more" in line and "\n" not in line


def test_a_rerun_that_differs_only_by_labels_says_how_to_relabel_without_extracting(tmp_path):
    def make(identity: dict) -> dict:
        return {"identity": identity, "identity_sha256": manifest.compute_identity_digest(identity)}

    out = tmp_path / "out"
    assert out_folder.open_run(out, make({"labels": "a" * 64, "layers": ["conv5_3"]}), overwrite=False)
    with pytest.raises(ConfigError, match=r'labels: aaaaaaaaaaaa there.*make report RUN=.*ARGS="--labels FILE.csv"'):
        out_folder.open_run(out, make({"labels": "b" * 64, "layers": ["conv5_3"]}), overwrite=False)
    with pytest.raises(ConfigError) as e:  # another difference too: re-extracting is needed, no such advice
        out_folder.open_run(out, make({"labels": "b" * 64, "layers": ["conv4_3"]}), overwrite=False)
    assert "--labels FILE.csv" not in str(e.value)


def test_a_bad_labels_csv_is_one_line(tmp_path, capsys):
    run = write_synthetic_run(tmp_path / "run", SyntheticRun(n_images=8, layers={"conv5_3": 4}))
    (tmp_path / "bad.csv").write_text("path,class\na,b\n", encoding="utf-8")
    assert (
        cli.run_main(
            report.parse,
            report.main,
            "report",
            ["--run", str(run), "--labels", str(tmp_path / "bad.csv"), "--no-overlays"],
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "bad.csv" in err and "image_id,label" in err and "Traceback" not in err
