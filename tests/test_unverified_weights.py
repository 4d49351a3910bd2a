"""Weights that are not what their name says: cached ImageNet weights whose sha256 does not match the name they are
cached under get a banner on the report and on the inspect page; weights that match get none."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from analysis.config import make_config, read_config_section
from analysis.model import vgg16
from analysis.store import contract
from jobs import cli, extract
from jobs import inspect as inspect_job
from jobs.config import ExtractConfig
from tests.helpers import write_image
from tests.small_runs import make_report, make_state_dict


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
    extract.main(
        make_config(
            ExtractConfig,
            {
                **read_config_section(None, "extract"),
                "data": str(data),
                "out": str(out),
                "weights": "imagenet",
                "image_size": 32,
                "layers": ["conv5_3"],
                "attribution_layers": "none",
                "device": "cpu",
                "precision": "fp32",
                "batch_size": 4,
                "workers": 0,
                "download": False,
                "progress": False,
                **values,
            },
        )
    )
    return json.loads((out / contract.RUN_JSON).read_text())


def cache(torch_home: Path, checkpoint: Path, name: str) -> Path:
    path = torch_home / "hub" / "checkpoints" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, path)
    return path


@pytest.mark.slow
def test_unverified_cached_weights_get_a_banner_on_both_pages(torch_home, checkpoint, data, tmp_path):
    """torchvision's file name promises sha256 397923af...; these bytes do not have it."""
    cached = cache(torch_home, checkpoint, "vgg16-397923af.pth")
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,label\ncat/0.jpg,dog\n", encoding="utf-8")
    meta = run_imagenet_extract(data, tmp_path / "out", labels=str(labels))
    assert meta["weights"]["verified"] is False and meta["weights"]["id"] == vgg16.IMAGENET_WEIGHTS_ID
    off = {**read_config_section(None, "report_qa"), "enabled": False}
    html = (make_report(tmp_path / "out", dataset_issues=off) / contract.INDEX_HTML).read_text(encoding="utf-8")
    banner = (
        f"Unverified weights: the sha256 of <code>{cached}</code> does not match torchvision&#39;s "
        f"<code>{vgg16.IMAGENET_WEIGHTS_ID}</code>"
    )
    assert banner in html and html.index(banner) < html.index("<h2 ")  # at the top, before the first section
    assert f"Labels from <code>{labels}</code>, given to the extract (--labels)" in html

    image = write_image(tmp_path / "one.jpg", size=(40, 40), seed=3)
    assert (
        cli.run_main(
            inspect_job.parse,
            inspect_job.main,
            "inspect",
            [
                "--image",
                str(image),
                "--out",
                str(tmp_path / "inspect"),
                "--weights",
                "imagenet",
                "--image-size",
                "32",
                "--layers",
                "conv5_3",
                "--set",
                "download=false",
            ],
        )
        == 0
    )
    pages = list((tmp_path / "inspect").rglob("index.html"))
    assert len(pages) == 1 and banner in pages[0].read_text(encoding="utf-8")


@pytest.mark.slow
def test_verified_cached_weights_get_no_banner(torch_home, checkpoint, data, tmp_path, monkeypatch):
    """The same bytes under a name that promises their own sha256 prefix, as torchvision names its files."""
    prefix = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:8]
    cache(torch_home, checkpoint, f"vgg16-{prefix}.pth")
    monkeypatch.setattr(vgg16.IMAGENET_WEIGHTS.value, "url", f"https://download.pytorch.org/models/vgg16-{prefix}.pth")
    meta = run_imagenet_extract(data, tmp_path / "out")
    assert meta["weights"]["verified"] is True
    off = {**read_config_section(None, "report_qa"), "enabled": False}
    html = (make_report(tmp_path / "out", dataset_issues=off) / contract.INDEX_HTML).read_text(encoding="utf-8")
    assert "Unverified weights" not in html and "unverified" not in html
    assert "Labels from" not in html
