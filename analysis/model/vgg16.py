"""VGG16 and its weights: torchvision's ImageNet weights, a checkpoint file, or random weights for smoke runs.

Every failure a user can cause (weights not cached, a file that is not a VGG16 state dict, class names that do not
fit the head) raises `WeightsError` with a one-line message. Checkpoints are loaded onto a meta-device model with
`assign=True`, so loading never pays for a random initialisation that is thrown away.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from analysis.model.checkpoints import (
    WeightsError,
    check_names,
    check_promised_sha256,
    promised_prefix,
    read_checkpoint,
    read_sha256,
    unwrap,
    why,
)

IMAGENET_WEIGHTS = VGG16_Weights.IMAGENET1K_V1
IMAGENET_WEIGHTS_ID = "torchvision:VGG16_Weights.IMAGENET1K_V1"

# Index of each conv in torchvision's vgg16().features; the in-place ReLU after it is index + 1.
CONV_INDICES: dict[str, int] = {
    "conv1_1": 0,
    "conv1_2": 2,
    "conv2_1": 5,
    "conv2_2": 7,
    "conv3_1": 10,
    "conv3_2": 12,
    "conv3_3": 14,
    "conv4_1": 17,
    "conv4_2": 19,
    "conv4_3": 21,
    "conv5_1": 24,
    "conv5_2": 26,
    "conv5_3": 28,
}

_HEAD_KEY = "classifier.6.weight"
_SHOWN = 3  # offending keys named per kind in an error message

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module  # eval mode, on CPU, fp32
    classes: tuple[str, ...]  # output classes of the analysis, in logit order
    head: str  # "imagenet" (1000-way, folded by heads.py) or "classes" (N-way head == classes)
    weights_id: str
    weights_path: str | None
    weights_sha256: str | None
    class_map: tuple[tuple[str, int, int], ...] | None  # imagenet head: (class, first, last), inclusive
    imagenet_categories: tuple[str, ...] | None  # imagenet head: the 1000 ImageNet names
    random: bool
    # ImageNet weights: whether the file's sha256 starts with the prefix its torchvision name promises (False: the
    # weights are not what weights_id says); None where nothing is promised (random weights, a checkpoint file)
    weights_verified: bool | None = None


def make_vgg16(num_classes: int) -> nn.Module:
    return vgg16(weights=None, num_classes=num_classes)


def relu_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Layer name -> the ReLU after that conv (its output is the layer's activation)."""
    features = model.features
    out = {}
    for name, i in CONV_INDICES.items():
        conv, relu = features[i], features[i + 1]
        if not isinstance(conv, nn.Conv2d) or not isinstance(relu, nn.ReLU):
            raise ValueError(
                f"model is not a torchvision VGG16: features.{i} is {type(conv).__name__} and "
                f"features.{i + 1} is {type(relu).__name__}, expected Conv2d and ReLU ({name})"
            )
        out[name] = relu
    return out


def layer_channels(model: nn.Module) -> dict[str, int]:
    return {name: model.features[i].out_channels for name, i in CONV_INDICES.items()}


def imagenet_weights_path() -> Path:
    """Where torchvision's loader caches the ImageNet weights: <torch hub dir>/checkpoints/<file name of the URL>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(IMAGENET_WEIGHTS.url).path).name


def load_model(
    weights: str,
    *,
    classes: tuple[str, ...] | None,
    classes_file: str | None,
    class_map: tuple[tuple[str, int, int], ...],
    download: bool,
    seed: int,
    progress: bool = True,
) -> LoadedModel:
    """`weights` is "imagenet", "random" or the path of a checkpoint (.pt/.pth/.bin via torch.load, .safetensors).

    `progress` only shows torchvision's download bar. Raises WeightsError before any image needs to be read.
    """
    if weights == "imagenet":
        path = imagenet_weights_path()
        state = _read_imagenet_state(path, download, progress)
        state, _ = unwrap(state, f"cached ImageNet weights {path}")
        _check_vgg16(state, f"cached ImageNet weights {path}", num_classes=1000)
        sha256 = read_sha256(path)
        verified = check_promised_sha256(path.name, sha256)
        if verified is False:
            _log.warning(
                "%s: sha256 %s does not start with %s as its name says; these are not torchvision's ImageNet weights",
                path,
                sha256[:16],
                promised_prefix(path.name),
            )
        return replace(
            _imagenet_loaded(_build(state, 1000), class_map, IMAGENET_WEIGHTS_ID, str(path), sha256, random=False),
            weights_verified=verified,
        )
    if weights == "random":
        with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG stream untouched
            torch.default_generator.manual_seed(seed)
            model = make_vgg16(1000).eval()
        return _imagenet_loaded(model, class_map, f"random(seed={seed})", None, None, random=True)

    path = Path(weights).expanduser()
    where = f"weights {str(path)!r}"
    state, ckpt_classes = read_checkpoint(path, where)
    n = _check_vgg16(state, where)
    sha256 = read_sha256(path)
    if n == 1000:
        return _imagenet_loaded(
            _build(state, n), class_map, f"file:{path.name}", str(path.resolve()), sha256, random=False
        )
    names = _resolve_classes(n, ckpt_classes, classes, classes_file, where)
    return LoadedModel(
        model=_build(state, n),
        classes=names,
        head="classes",
        weights_id=f"file:{path.name}",
        weights_path=str(path.resolve()),
        weights_sha256=sha256,
        class_map=None,
        imagenet_categories=None,
        random=False,
    )


def read_classes_file(path: str) -> tuple[str, ...]:
    """One class name a line (classification-pytorch's cls_classes.txt); stripped, blank lines ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"classes file {path!r} cannot be read ({why(e)})") from None
    return check_names([line.strip() for line in text.splitlines() if line.strip()], f"classes file {path!r}")


# ---------------------------------------------------------------------------------------------------------------


def _imagenet_loaded(model, class_map, weights_id, path, sha256, random) -> LoadedModel:
    if not class_map:
        raise ValueError("class_map is empty: an ImageNet head needs at least one (class, first, last) range")
    names = check_names([name for name, _, _ in class_map], "imagenet_classes")
    class_map = tuple((name, first, last) for name, (_, first, last) in zip(names, class_map))
    return LoadedModel(
        model=model,
        classes=names,
        head="imagenet",
        weights_id=weights_id,
        weights_path=path,
        weights_sha256=sha256,
        class_map=tuple(class_map),
        imagenet_categories=tuple(IMAGENET_WEIGHTS.meta["categories"]),
        random=random,
    )


def _read_imagenet_state(path: Path, download: bool, progress: bool) -> Mapping[str, Any]:
    alternatives = f"Copy {path.name} there, set TORCH_HOME, or use --weights <checkpoint> / --weights random."
    cached = path.is_file()
    if not cached and not download:
        raise WeightsError(
            f"ImageNet VGG16 weights are not in the torch hub cache ({path}) and downloading is "
            f"off (download: false). {alternatives}"
        )
    try:
        # torchvision's own loader: reads the hub cache, downloads into it (hash-checked) when missing.
        return IMAGENET_WEIGHTS.get_state_dict(
            progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except (URLError, OSError, RuntimeError, EOFError, pickle.UnpicklingError, KeyError, IndexError) as e:
        if cached:
            raise WeightsError(
                f"cached ImageNet VGG16 weights {path} cannot be read ({why(e)}); delete the file "
                f"to download it again. {alternatives}"
            ) from None
        raise WeightsError(
            f"ImageNet VGG16 weights are not in the torch hub cache ({path}) and could not be "
            f"downloaded: {why(e)}. {alternatives}"
        ) from None


def _check_vgg16(state: Mapping[str, torch.Tensor], where: str, num_classes: int | None = None) -> int:
    """Keys and shapes must be torchvision's vgg16 with some N-way head; returns N."""
    head = state.get(_HEAD_KEY)
    n = num_classes or (head.shape[0] if head is not None and head.dim() == 2 else 1000)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in make_vgg16(n).state_dict().items()}
    fmt = lambda k, shape: f"{k} {tuple(shape)}"  # noqa: E731
    wrong = [
        f"{k} expected {expected[k]} got {tuple(v.shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    wrong += [
        f"{k} is {v.dtype}, expected floating point"
        for k, v in state.items()
        if k in expected and not v.is_floating_point()
    ]
    missing = [fmt(k, s) for k, s in expected.items() if k not in state]
    unexpected = [fmt(k, v.shape) for k, v in state.items() if k not in expected]
    parts = []
    for label, items in (("wrong shape or dtype", wrong), ("missing", missing), ("unexpected", unexpected)):
        if items:
            more = f", ... {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
            parts.append(f"{len(items)} {label} ({', '.join(items[:_SHOWN])}{more})")
    if parts:
        raise WeightsError(
            f"{where} is not a torchvision VGG16 state dict"
            f"{'' if num_classes is None else f' with a {num_classes}-way head'}: " + "; ".join(parts)
        )
    return n


def _resolve_classes(n: int, from_checkpoint, classes, classes_file, where: str) -> tuple[str, ...]:
    sources = [
        ("the checkpoint", from_checkpoint),
        ("--classes", None if classes is None else check_names(classes, "--classes")),
        (f"--classes-file {classes_file}", None if classes_file is None else read_classes_file(classes_file)),
    ]
    given = [(src, names) for src, names in sources if names is not None]
    head = f"a {n}-way head ({_HEAD_KEY} {(n, 4096)})"
    if not given:
        raise WeightsError(
            f"{where} has {head} but no class names; pass --classes a,b or --classes-file FILE "
            f"(one name a line, in head order)"
        )
    src, names = given[0]
    for other_src, other in given[1:]:
        if other != names:
            raise WeightsError(
                f"class names from {src} ({', '.join(names)}) differ from {other_src} "
                f"({', '.join(other)}); give one list, in head order"
            )
    if len(names) != n:
        raise WeightsError(
            f"{where} has {head} but {src} names {len(names)} classes ({', '.join(names)}); "
            f"the head needs exactly {n} names in head order, or use a 1000-way ImageNet head"
        )
    return names


def _build(state: Mapping[str, torch.Tensor], n: int) -> nn.Module:
    with torch.device("meta"):
        model = make_vgg16(n)
    state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)  # the checkpoint's tensors become the parameters
    return model.eval()
