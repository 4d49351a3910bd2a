"""The jobs' configs: one frozen dataclass per job, with no defaults (they live in configs/default.yaml), each
checked on creation by analysis.config's validators. Only the jobs know them; the library takes plain values.
"""
from __future__ import annotations

import dataclasses

from analysis.config import (PRECISIONS, PREPROCESS_NAMES, reject, check_bool, check_choice, check_colormap,
                             check_device, check_fraction, check_int, check_optional_str, normalize_class_map,
                             normalize_classes, normalize_layers, normalize_optional_layers)
from analysis.store.shards import parse_shard
from analysis.walkthrough.convolution import KERNEL_NAMES


def check_model_keys(cfg) -> None:
    """The keys that choose the model, its weights and its preprocessing: the same in extract and inspect."""
    set_ = object.__setattr__
    check_optional_str("classes_file", cfg.classes_file)
    if not isinstance(cfg.weights, str) or not cfg.weights:
        reject("weights", cfg.weights, "imagenet, random or the path of a checkpoint file")
    set_(cfg, "classes", normalize_classes("classes", cfg.classes))
    check_choice("preprocess", cfg.preprocess, PREPROCESS_NAMES)
    check_int("image_size", cfg.image_size, 32, 4096)
    set_(cfg, "layers", normalize_layers("layers", cfg.layers))
    check_int("seed", cfg.seed, 0)
    check_bool("download", cfg.download)
    check_int("max_image_pixels", cfg.max_image_pixels, 1)
    check_int("max_file_bytes", cfg.max_file_bytes, 1)
    set_(cfg, "imagenet_classes", normalize_class_map("imagenet_classes", cfg.imagenet_classes))


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    data: str | None
    out: str | None
    labels: str | None
    weights: str
    classes: tuple[str, ...] | None
    classes_file: str | None
    preprocess: str
    image_size: int
    layers: tuple[str, ...]
    batch_size: int
    workers: int | str
    device: str
    precision: str
    unit_size: int
    shard: str | None
    seed: int
    download: bool
    progress: bool
    overwrite: bool
    max_image_pixels: int
    max_file_bytes: int
    imagenet_classes: tuple[tuple[str, int, int], ...]
    attribution_layers: tuple[str, ...]

    def __post_init__(self):
        check_optional_str("data", self.data)
        object.__setattr__(self, "attribution_layers",
                           normalize_optional_layers("attribution_layers", self.attribution_layers))
        check_optional_str("out", self.out)
        check_optional_str("labels", self.labels)
        check_model_keys(self)
        check_int("batch_size", self.batch_size, 1)
        if self.workers != "auto":
            check_int("workers", self.workers, 0, 256)
        check_device("device", self.device)
        check_choice("precision", self.precision, PRECISIONS)
        check_int("unit_size", self.unit_size, 1)
        if self.shard is not None:
            parse_shard(self.shard)
        check_bool("progress", self.progress)
        check_bool("overwrite", self.overwrite)


# ---------------------------------------------------------------------------------------------------------------
# The report stage (appended; owned by the report stage).

@dataclasses.dataclass(frozen=True)
class ReportConfig:
    run: str | None
    out: str | None
    layers: tuple[str, ...]
    top_channels: int
    top_images: int
    mistakes: int
    overlays: bool
    colormap: str
    alpha: float
    thumbnail: int
    device: str
    batch_size: int
    stats_memory_mb: int
    note: str | None
    progress: bool

    def __post_init__(self):
        check_optional_str("run", self.run)
        check_optional_str("out", self.out)
        object.__setattr__(self, "layers", normalize_layers("layers", self.layers))
        check_int("top_channels", self.top_channels, 1, 512)
        check_int("top_images", self.top_images, 1, 1000)
        check_int("mistakes", self.mistakes, 0, 10000)
        check_bool("overlays", self.overlays)
        check_colormap("colormap", self.colormap)
        check_fraction("alpha", self.alpha)
        check_int("thumbnail", self.thumbnail, 16, 1024)
        check_device("device", self.device)
        check_int("batch_size", self.batch_size, 1)
        check_int("stats_memory_mb", self.stats_memory_mb, 1)
        check_optional_str("note", self.note)
        check_bool("progress", self.progress)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    out: str
    images_per_class: int
    image_size: int
    weights: str
    device: str

    def __post_init__(self):
        if not isinstance(self.out, str) or not self.out:
            reject("out", self.out, "a folder path")
        check_int("images_per_class", self.images_per_class, 2, 10000)
        check_int("image_size", self.image_size, 32, 4096)
        if self.weights not in ("auto", "imagenet", "random"):
            reject("weights", self.weights, "auto, imagenet or random")
        check_device("device", self.device)




@dataclasses.dataclass(frozen=True)
class InspectConfig:
    image: str | None
    out: str | None
    run: str | None
    weights: str
    classes: tuple[str, ...] | None
    classes_file: str | None
    preprocess: str
    image_size: int
    layers: tuple[str, ...]
    kernel: str
    kernel_seed: int
    seed: int
    download: bool
    grid_channels: int
    run_channels: int
    colormap: str
    alpha: float
    max_image_pixels: int
    max_file_bytes: int
    imagenet_classes: tuple[tuple[str, int, int], ...]

    def __post_init__(self):
        check_optional_str("image", self.image)
        check_optional_str("out", self.out)
        check_optional_str("run", self.run)
        check_model_keys(self)
        check_choice("kernel", self.kernel, KERNEL_NAMES)
        check_int("kernel_seed", self.kernel_seed, 0)
        check_int("grid_channels", self.grid_channels, 1, 512)
        check_int("run_channels", self.run_channels, 1, 64)
        check_colormap("colormap", self.colormap)
        check_fraction("alpha", self.alpha)
