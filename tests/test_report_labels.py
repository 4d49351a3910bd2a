"""Labels given to the report (`--labels` at report time) and the page's banners: labels from a CSV, labels outside
the classes, and weights whose sha256 does not match the name they are cached under."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from analysis.config import ConfigError, make_config, read_config_section
from analysis.model import vgg16
from analysis.stats.relabel import describe_unmatched, relabel_predictions
from analysis.stats.run_channels import read_selective_channels
from analysis.store import contract, manifest
from analysis.store.synthetic import make_image_ids, write_synthetic_run
from jobs import cli, extract, outputs, report
from jobs import inspect as inspect_job
from jobs.config import ExtractConfig, ReportConfig
from tests.conftest import write_image
from tests.test_model import make_state_dict

CLASSES = ("cat", "dog")
N = 40
HOSTILE = ("Cat/0.jpg", "Dog/1.jpg")   # ids with a folder, for the CSV's Windows spelling
GHOST = "<img src=x onerror=alert(1)>.jpg"   # an id of the CSV that matches no image: named on the page, as text


def make_report(run: Path, **values) -> Path:
    report.main(make_config(ReportConfig, {**read_config_section(None, "report"),
                                           "qa": read_config_section(None, "report_qa"), "run": str(run),
                                           "layers": ["conv5_3"], "overlays": False, "image_thumbnails": 0,
                                           "progress": False, **values}))
    return run / contract.REPORT_DIR


def read_meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[contract.METADATA_KEY])


@pytest.fixture(scope="module")
def relabelled(tmp_path_factory):
    """An unlabeled synthetic run, reported with a CSV that labels it: most ids as written, one in Windows spelling,
    one label in capitals, one outside the classes, one id that matches no image; two images not named."""
    root = tmp_path_factory.mktemp("relabel")
    run = write_synthetic_run(root / "run", n_images=N, layers={"conv5_3": 8}, labeled=False, hostile=HOSTILE,
                              planted=("conv5_3", 3, "dog"))
    ids = make_image_ids(N, CLASSES, HOSTILE)
    rng = np.random.default_rng(7)
    truth = {i: ("cat", "dog")[int(b)] for i, b in zip(ids, rng.integers(0, 2, N))}   # not the predictions
    truth[ids[5]] = "kitten"                                                          # outside the classes
    del truth[ids[6]], truth[ids[7]]                                                  # not named: stay unlabeled
    rows = [("Cat\\0.jpg" if i == "Cat/0.jpg" else i, "DOG" if i == ids[8] and lab == "dog" else lab)
            for i, lab in truth.items()] + [("nope/ghost.jpg", "cat"), (GHOST, "dog")]
    csv = root / "fixed labels.csv"
    csv.write_text("image_id,label\n" + "".join(f"{i},{lab}\n" for i, lab in rows), encoding="utf-8")
    handler = _Capture()
    logging.getLogger("cnn_blackbox").addHandler(handler)
    try:
        out = make_report(run, labels=str(csv))
    finally:
        logging.getLogger("cnn_blackbox").removeHandler(handler)
    return {"run": run, "out": out, "csv": csv, "truth": truth, "log": "\n".join(handler.lines),
            "html": (out / contract.INDEX_HTML).read_text(encoding="utf-8")}


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_report_labels_change_the_class_statistics_to_a_groupby_with_the_csv(relabelled):
    """channel_stats against pandas: the activations grouped by the CSV's labels (images not named keep none)."""
    acts = pd.read_parquet(contract.activation_dir(relabelled["run"], "conv5_3", "mean")).set_index(contract.IMAGE_ID)
    label = pd.Series(relabelled["truth"]).reindex(acts.index)
    grouped = acts[label.isin(CLASSES)].groupby(label[label.isin(CLASSES)])
    stats = pd.read_parquet(relabelled["out"] / contract.CHANNEL_STATS)
    s = stats[(stats[contract.LAYER] == "conv5_3") & (stats[contract.STAT] == contract.STAT_MEAN)]
    assert set(s[contract.GROUP_BY]) == {contract.GROUP_LABEL}      # the run alone would group by prediction
    for cls in CLASSES:
        got = s[s[contract.CLASS] == cls].set_index(contract.CHANNEL).sort_index()
        assert (got[contract.N] == grouped.size()[cls]).all()
        np.testing.assert_allclose(got[contract.MEAN], grouped.mean().loc[cls].to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(got[contract.STD], grouped.std(ddof=1).loc[cls].to_numpy(), rtol=1e-5)


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


def test_report_labels_are_recorded_in_every_table(relabelled):
    digest = hashlib.sha256(relabelled["csv"].read_bytes()).hexdigest()
    for name in (contract.CHANNEL_STATS, contract.TOP_EXAMPLES, contract.DATASET_ISSUES):
        labels = read_meta(relabelled["out"] / name)["labels"]
        assert (labels["source"], labels["csv"], labels["sha256"]) == ("report", str(relabelled["csv"]), digest), name
    # make inspect --run ranks by this report's table, and says by whose labels
    ranking = read_selective_channels(relabelled["run"], json.loads((relabelled["run"] / contract.RUN_JSON)
                                                                    .read_text()), "conv5_3", "dog", 3)
    assert ranking.source.endswith(f"labels from {relabelled['csv']} given to the report")
    # the run's own tables are untouched: the labels are the report's, not the run's
    assert pd.read_parquet(relabelled["run"] / contract.PREDICTIONS)[contract.LABEL].isna().all()


def test_unknown_ids_are_named_and_labels_outside_the_classes_counted(relabelled):
    assert f"2 ids match no image of the run: 'nope/ghost.jpg', '{GHOST}'" in relabelled["log"]
    line = "1 image carries labels outside the classes cat, dog: 'kitten' (1)"
    assert line in relabelled["log"]
    assert line.replace("'", "&#39;") in relabelled["html"]
    assert "2 ids match no image: &#39;nope/ghost.jpg&#39;, &#39;&lt;img src=x onerror=alert(1)&gt;.jpg&#39;" \
        in relabelled["html"]
    assert GHOST not in relabelled["html"]
    stats = pd.read_parquet(relabelled["out"] / contract.CHANNEL_STATS)
    assert stats[contract.N].max() <= N - 3          # kitten, and the two not named, are in no class


def test_relabel_keeps_outside_labels_and_nulls_their_correct():
    p = pd.DataFrame({contract.IMAGE_ID: ["a", "b", "c", "d", "e"], contract.LABEL: ["cat", None, "dog", "dog", "cat"],
                      contract.STATUS: ["ok", "ok", "ok", "error", "ok"],
                      contract.PRED: ["cat", "dog", "dog", None, "cat"],
                      contract.CORRECT: [True, None, True, None, True]})
    before = p.copy()
    out, changed = relabel_predictions(p, {"a": "fox", "b": "dog", "c": "cat", "d": "cat"}, CLASSES)
    assert list(out[contract.LABEL]) == ["fox", "dog", "cat", "cat", "cat"]
    assert list(out[contract.CORRECT]) == [None, True, False, None, True]   # outside, right, wrong, error, kept
    assert changed == 4
    pd.testing.assert_frame_equal(p, before)   # the input untouched


def test_unmatched_ids_name_the_first_ten_and_count_the_rest():
    ids = [f"x/{k}.jpg" for k in range(13)]
    line = describe_unmatched("l.csv", ids)
    assert "13 ids match no image" in line and "'x/9.jpg'" in line and "'x/10.jpg'" not in line
    assert "'x/9.jpg' and 3 more" in line and "\n" not in line


def test_a_rerun_that_differs_only_by_labels_says_how_to_relabel_without_extracting(tmp_path):
    def make(identity: dict) -> dict:
        return {"identity": identity, "identity_sha256": manifest.compute_identity_digest(identity)}

    out = tmp_path / "out"
    assert outputs.open_run(out, make({"labels": "a" * 64, "layers": ["conv5_3"]}), overwrite=False)
    with pytest.raises(ConfigError, match=r'labels: aaaaaaaaaaaa there.*make report RUN=.*ARGS="--labels FILE.csv"'):
        outputs.open_run(out, make({"labels": "b" * 64, "layers": ["conv5_3"]}), overwrite=False)
    with pytest.raises(ConfigError) as e:   # another difference too: re-extracting is needed, no such advice
        outputs.open_run(out, make({"labels": "b" * 64, "layers": ["conv4_3"]}), overwrite=False)
    assert "--labels FILE.csv" not in str(e.value)


def test_a_bad_labels_csv_is_one_line(tmp_path, capsys):
    run = write_synthetic_run(tmp_path / "run", n_images=8, layers={"conv5_3": 4})
    (tmp_path / "bad.csv").write_text("path,class\na,b\n", encoding="utf-8")
    assert cli.run_main(report.parse, report.main, "report",
                        ["--run", str(run), "--labels", str(tmp_path / "bad.csv"), "--no-overlays"]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "image_id,label" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# Weights that are not what their name says

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A 1000-way VGG16 state dict with random values (its sha256 is not torchvision's)."""
    path = tmp_path_factory.mktemp("ckpt") / "state.pth"
    torch.save(make_state_dict(1000), path)
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    for i in range(2):
        write_image(tmp_path / "data" / "cat" / f"{i}.jpg", size=(40, 32), seed=i)
        write_image(tmp_path / "data" / "dog" / f"{i}.jpg", size=(32, 40), seed=10 + i)
    return tmp_path / "data"


def run_imagenet_extract(data: Path, out: Path, **values) -> dict:
    extract.main(make_config(ExtractConfig, {
        **read_config_section(None, "extract"), "data": str(data), "out": str(out), "weights": "imagenet",
        "image_size": 32, "layers": ["conv5_3"], "attribution_layers": "none", "device": "cpu", "precision": "fp32",
        "batch_size": 4, "workers": 0, "download": False, "progress": False, **values}))
    return json.loads((out / contract.RUN_JSON).read_text())


def cache(torch_home: Path, checkpoint: Path, name: str) -> Path:
    path = torch_home / "hub" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, path)
    return path


def test_unverified_cached_weights_get_a_banner_on_both_pages(torch_home, checkpoint, data, tmp_path):
    """torchvision's file name promises sha256 397923af...; these bytes do not have it."""
    cached = cache(torch_home, checkpoint, "vgg16-397923af.pth")
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,label\ncat/0.jpg,dog\n", encoding="utf-8")
    meta = run_imagenet_extract(data, tmp_path / "out", labels=str(labels))
    assert meta["weights"]["verified"] is False and meta["weights"]["id"] == vgg16.IMAGENET_WEIGHTS_ID
    html = (make_report(tmp_path / "out", **{"qa": {**read_config_section(None, "report_qa"), "enabled": False}})
            / contract.INDEX_HTML).read_text(encoding="utf-8")
    banner = (f"Unverified weights: the sha256 of <code>{cached}</code> does not match torchvision&#39;s "
              f"<code>{vgg16.IMAGENET_WEIGHTS_ID}</code>")
    assert banner in html and html.index(banner) < html.index("<h2 ")   # at the top, before the first section
    assert f"Labels from <code>{labels}</code>, given to the extract (--labels)" in html

    image = write_image(tmp_path / "one.jpg", size=(40, 40), seed=3)
    assert cli.run_main(inspect_job.parse, inspect_job.main, "inspect",
                        ["--image", str(image), "--out", str(tmp_path / "inspect"), "--weights", "imagenet",
                         "--image-size", "32", "--layers", "conv5_3", "--set", "download=false"]) == 0
    pages = list((tmp_path / "inspect").rglob("index.html"))
    assert len(pages) == 1 and banner in pages[0].read_text(encoding="utf-8")


def test_verified_cached_weights_get_no_banner(torch_home, checkpoint, data, tmp_path, monkeypatch):
    """The same bytes under a name that promises their own sha256 prefix, as torchvision names its files."""
    prefix = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:8]
    cache(torch_home, checkpoint, f"vgg16-{prefix}.pth")
    monkeypatch.setattr(vgg16.IMAGENET_WEIGHTS.value, "url", f"https://download.pytorch.org/models/vgg16-{prefix}.pth")
    meta = run_imagenet_extract(data, tmp_path / "out")
    assert meta["weights"]["verified"] is True
    html = (make_report(tmp_path / "out", **{"qa": {**read_config_section(None, "report_qa"), "enabled": False}})
            / contract.INDEX_HTML).read_text(encoding="utf-8")
    assert "Unverified weights" not in html and "unverified" not in html
    assert "Labels from" not in html
