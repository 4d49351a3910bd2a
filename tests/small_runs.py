"""The jobs' small runs the test modules share (a test module never imports another), a report of a run, a random
VGG16 state dict to save as a checkpoint, checkpoints the loader must refuse, and the loader's checks on what it
loaded. Files the tests write are in helpers.py, fixtures in conftest.py."""

from __future__ import annotations

import copy
import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from analysis.config import make_config, read_config_section
from analysis.model.vgg16 import CONV_INDICES, load_model, make_vgg16
from analysis.store import contract
from jobs import cli, extract, report
from jobs.config import ExtractConfig, ReportConfig

# No attribution unless a test asks for it (a later --attribution-layers wins): its backward is most of a small run.
SMALL = [
    "--image-size",
    "64",
    "--batch-size",
    "4",
    "--workers",
    "0",
    "--precision",
    "fp32",
    "--device",
    "cpu",
    "--no-progress",
    "--attribution-layers",
    "none",
]
BIG = ("classifier.0.weight", "classifier.3.weight")  # 119M of VGG16's 138M parameters


def run(data, out, *extra) -> int:
    """The extract job in this process on the SMALL settings and `extra` flags; its exit code."""
    return cli.run_main(
        extract.parse, extract.main, "extract", ["--data", str(data), "--out", str(out), *SMALL, *extra]
    )


def run_extract_and_report(data: Path, out: Path) -> Path:
    """A random-weights extract of conv4_3 and conv5_3 at 64 px, then its report; the report's folder."""
    extract.main(
        make_config(
            ExtractConfig,
            {
                **read_config_section(None, "extract"),
                "data": str(data),
                "out": str(out),
                "weights": "random",
                "image_size": 64,
                "layers": ["conv4_3", "conv5_3"],
                "device": "cpu",
                "precision": "fp32",
                "batch_size": 4,
                "workers": 0,
                "download": False,
                "progress": False,
            },
        )
    )
    report.main(
        make_config(
            ReportConfig,
            {
                **read_config_section(None, "report"),
                "dataset_issues": read_config_section(None, "report_qa"),
                "run": str(out),
                "device": "cpu",
                "top_channels": 2,
                "top_images": 5,
                "mistakes": 4,
                "thumbnail": 64,
                "progress": False,
                "concepts": {**read_config_section(None, "concepts"), "device": "cpu", "concepts": 3},
            },
        )
    )
    return out / contract.REPORT_DIR


def make_report(run: Path, **values) -> Path:
    """The report of `run` (conv5_3 only, no overlays, no thumbnails), with `values` over those settings; its folder."""
    report.main(
        make_config(
            ReportConfig,
            {
                **read_config_section(None, "report"),
                "dataset_issues": read_config_section(None, "report_qa"),
                "run": str(run),
                "layers": ["conv5_3"],
                "overlays": False,
                "image_thumbnails": 0,
                "progress": False,
                "concepts": {**read_config_section(None, "concepts"), "enabled": False},  # not about concepts
                **values,
            },
        )
    )
    return run / contract.REPORT_DIR


def make_state_dict(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision VGG16 keys and shapes with random values. The two big classifier matrices are one random row
    broadcast (stride 0): torch.save stores that row only, so a checkpoint costs ~60 MB instead of 553 MB."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in make_vgg16(num_classes).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(s[1], generator=g).expand(s) if k in BIG else torch.randn(s, generator=g) * 0.01
        for k, s in shapes.items()
    }


CLASS_MAP = (("cat", 281, 285), ("dog", 151, 268))


def load_weights(weights, **kw):
    """load_model with the ImageNet cat and dog mapping, no download and seed 0, unless `kw` says otherwise."""
    args = dict(classes=None, classes_file=None, class_map=CLASS_MAP, download=False, seed=0)
    return load_model(str(weights), **{**args, **kw})


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for key in ("features.0.weight", "features.28.bias", "classifier.0.weight", "classifier.6.weight"):
        assert params[key].dtype == torch.float32 and params[key].device.type == "cpu"
        assert torch.equal(params[key], state[key].float()), key


class RunsOnUnpickling:
    """An object whose unpickling calls a function: what weights_only=True exists to refuse."""

    def __reduce__(self):
        return (print, ("this ran",))


def write_refused(path: Path, kind: str) -> None:
    """A weights file that the loader must refuse: a whole model, code, a plain pickle or text."""
    if kind == "whole model":
        torch.save(nn.Linear(2, 2), path)
    elif kind == "code":
        torch.save({"w": torch.zeros(1), "x": RunsOnUnpickling()}, path)
    elif kind == "plain pickle":
        path.write_bytes(pickle.dumps(RunsOnUnpickling(), protocol=2))
    else:
        path.write_text("hello world")


def assert_no_unsafe_advice(message: str) -> None:
    assert "\n" not in message and "\x1b" not in message, message
    assert "weights_only=False" not in message and "False" not in message, message
    assert "safe_globals" not in message and "trust" not in message, message


def trace_maps(model: nn.Module, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """Post-ReLU maps (B, C, H, W) of `layers` from an FX-traced copy of the features with out-of-place ReLUs: the
    tests' second way to the maps the hooks reduce."""
    from torchvision.models.feature_extraction import create_feature_extractor  # noqa: PLC0415

    features = copy.deepcopy(model.features)
    for m in features.modules():
        m._forward_hooks.clear()  # deepcopy copies hooks too
        if isinstance(m, nn.ReLU):
            m.inplace = False
    extractor = create_feature_extractor(features, return_nodes={str(CONV_INDICES[n] + 1): n for n in layers})
    with torch.inference_mode():
        return dict(extractor(x))
