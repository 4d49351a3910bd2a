"""The jobs' configs: one frozen dataclass per job, with no defaults (they live in configs/default.yaml), each
checked on creation by analysis.config's validators. Only the jobs know them; the library takes plain values.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from analysis.config import (
    DECODES,
    LAYER_NAMES,
    PRECISIONS,
    PREPROCESS_NAMES,
    REDUCTIONS,
    check_bool,
    check_choice,
    check_colormap,
    check_device,
    check_fraction,
    check_int,
    check_optional_str,
    make_config,
    normalize_class_map,
    normalize_classes,
    normalize_layers,
    normalize_optional_layers,
    read_config_section,
    reject,
)
from analysis.store.concept_contract import CONCEPT_LAYERS
from analysis.store.shards import parse_shard
from analysis.walkthrough.convolution import KERNEL_NAMES


@dataclasses.dataclass(frozen=True)
class ModelKeys:
    """The keys that choose the model, its weights and its preprocessing: the same in extract and inspect."""

    weights: str
    classes: tuple[str, ...] | None
    classes_file: str | None
    preprocess: str
    image_size: int
    layers: tuple[str, ...]
    seed: int
    download: bool
    max_image_pixels: int
    max_file_bytes: int
    imagenet_classes: tuple[tuple[str, int, int], ...]

    def __post_init__(self):
        set_ = object.__setattr__
        check_optional_str("classes_file", self.classes_file)
        if not isinstance(self.weights, str) or not self.weights:
            reject("weights", self.weights, "imagenet, random or the path of a checkpoint file")
        set_(self, "classes", normalize_classes("classes", self.classes))
        check_choice("preprocess", self.preprocess, PREPROCESS_NAMES)
        check_int("image_size", self.image_size, 32, 4096)
        set_(self, "layers", normalize_layers("layers", self.layers))
        check_int("seed", self.seed, 0)
        check_bool("download", self.download)
        check_int("max_image_pixels", self.max_image_pixels, 1)
        check_int("max_file_bytes", self.max_file_bytes, 1)
        set_(self, "imagenet_classes", normalize_class_map("imagenet_classes", self.imagenet_classes))


@dataclasses.dataclass(frozen=True)
class ExtractConfig(ModelKeys):
    data: str | None
    out: str | None
    labels: str | None
    attribution_layers: tuple[str, ...]
    batch_size: int | str  # or "auto": picked for the device (jobs/runtime.py)
    workers: int | str
    device: str
    share_gpus: bool
    precision: str
    reductions: str  # auto | eager | compiled: how the hooks reduce the maps (analysis/model/compiled.py)
    decode: str  # auto | cpu | gpu: where JPEGs are decoded and resized (analysis/data/device_decode.py)
    unit_size: int
    shard: str | None
    progress: bool
    overwrite: bool

    def __post_init__(self):
        check_optional_str("data", self.data)
        check_optional_str("out", self.out)
        check_optional_str("labels", self.labels)
        super().__post_init__()
        object.__setattr__(
            self, "attribution_layers", normalize_optional_layers("attribution_layers", self.attribution_layers)
        )
        if self.batch_size != "auto":
            check_int("batch_size", self.batch_size, 1)
        if self.workers != "auto":
            check_int("workers", self.workers, 0, 256)
        check_device("device", self.device)
        check_bool("share_gpus", self.share_gpus)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("reductions", self.reductions, REDUCTIONS)
        check_choice("decode", self.decode, DECODES)
        check_int("unit_size", self.unit_size, 1)
        if self.shard is not None:
            parse_shard(self.shard)
        check_bool("progress", self.progress)
        check_bool("overwrite", self.overwrite)


@dataclasses.dataclass(frozen=True)
class DatasetIssuesConfig:
    """The report's dataset checks (section report_qa, table dataset_issues.parquet): duplicates, likely label
    errors, outliers."""

    enabled: bool
    layer: str
    near_duplicate_bits: int
    similar_scene_ratio: float
    neighbours: int
    exact_max_images: int
    approx_dims: int
    memory_mb: int
    shown: int

    def __post_init__(self):
        check_bool("report_qa.enabled", self.enabled)
        check_choice("report_qa.layer", self.layer, ("auto", *LAYER_NAMES))
        check_int("report_qa.near_duplicate_bits", self.near_duplicate_bits, 0, 64)
        check_fraction("report_qa.similar_scene_ratio", self.similar_scene_ratio)
        check_int("report_qa.neighbours", self.neighbours, 1, 1000)
        check_int("report_qa.exact_max_images", self.exact_max_images, 0)
        check_int("report_qa.approx_dims", self.approx_dims, 2, 4096)
        check_int("report_qa.memory_mb", self.memory_mb, 1)
        check_int("report_qa.shown", self.shown, 0, 1000)

    @property
    def memory_bytes(self) -> int:
        """memory_mb in bytes: what the library takes."""
        return self.memory_mb << 20


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    run: str | None
    out: str | None
    labels: str | None  # a labels CSV read at report time instead of the run's labels
    layers: tuple[str, ...] | str  # "auto" or "all": picked from what the run recorded (jobs/report.py)
    top_channels: int
    top_images: int
    mistakes: int
    overlays: bool
    colormap: str
    alpha: float
    thumbnail: int
    image_thumbnails: int
    device: str
    batch_size: int
    stats_memory_mb: int
    note: str | None
    progress: bool
    dataset_issues: DatasetIssuesConfig  # the report_qa section; a mapping of it is checked and made the config
    concepts: ConceptsConfig | None = None  # the concepts section (a mapping is checked); None: its defaults

    def __post_init__(self):
        concepts = read_config_section(None, "concepts") if self.concepts is None else self.concepts
        if isinstance(concepts, Mapping):
            object.__setattr__(self, "concepts", make_config(ConceptsConfig, concepts))
        elif not isinstance(concepts, ConceptsConfig):
            reject("concepts", concepts, "the concepts section (a mapping)")
        if isinstance(self.dataset_issues, Mapping):
            object.__setattr__(self, "dataset_issues", make_config(DatasetIssuesConfig, self.dataset_issues))
        elif not isinstance(self.dataset_issues, DatasetIssuesConfig):
            reject("dataset_issues", self.dataset_issues, "the report_qa section (a mapping)")
        check_optional_str("run", self.run)
        check_optional_str("out", self.out)
        check_optional_str("labels", self.labels)
        if self.layers not in ("auto", "all"):
            object.__setattr__(self, "layers", normalize_layers("layers", self.layers))
        check_int("top_channels", self.top_channels, 1, 512)
        check_int("top_images", self.top_images, 1, 1000)
        check_int("mistakes", self.mistakes, 0, 10000)
        check_bool("overlays", self.overlays)
        check_colormap("colormap", self.colormap)
        check_fraction("alpha", self.alpha)
        check_int("thumbnail", self.thumbnail, 16, 1024)
        t = self.image_thumbnails  # a sprite cell's size; sheets of 256 cells, so small
        if isinstance(t, bool) or not isinstance(t, int) or not (t == 0 or 8 <= t <= 128):
            reject("image_thumbnails", t, "0 (off) or an integer from 8 to 128")
        check_device("device", self.device)
        check_int("batch_size", self.batch_size, 1)
        check_int("stats_memory_mb", self.stats_memory_mb, 1)
        check_optional_str("note", self.note)
        check_bool("progress", self.progress)

    @property
    def stats_memory_bytes(self) -> int:
        """stats_memory_mb in bytes: what the library takes."""
        return self.stats_memory_mb << 20


@dataclasses.dataclass(frozen=True)
class ConceptsConfig:
    """The concept stage (section concepts, tables concept_images.parquet and concepts.parquet): each class as k
    concepts of one layer's activations. The report runs it when enabled; `python -m jobs.concepts` runs it alone."""

    enabled: bool
    layer: str
    concepts: int
    images_per_class: int
    batch_size: int
    device: str
    seed: int

    def __post_init__(self):
        check_bool("concepts.enabled", self.enabled)
        check_choice("concepts.layer", self.layer, CONCEPT_LAYERS)
        check_int("concepts.concepts", self.concepts, 1, 512)
        check_int("concepts.images_per_class", self.images_per_class, 1)
        if self.images_per_class < self.concepts:
            reject(
                "concepts.images_per_class",
                self.images_per_class,
                f"at least concepts.concepts ({self.concepts}): each concept needs an image",
            )
        check_int("concepts.batch_size", self.batch_size, 1)
        check_device("concepts.device", self.device)
        check_int("concepts.seed", self.seed, 0)


@dataclasses.dataclass(frozen=True)
class ConceptsJobConfig:
    """`python -m jobs.concepts`: the run, where its tables go, and the concepts section."""

    run: str
    out: str | None  # null: RUN/report
    progress: bool
    concepts: ConceptsConfig

    def __post_init__(self):
        check_optional_str("run", self.run)
        check_optional_str("out", self.out)
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
class InspectConfig(ModelKeys):
    image: str | None
    out: str | None
    run: str | None
    kernel: str
    kernel_seed: int
    grid_channels: int
    run_channels: int
    colormap: str
    alpha: float

    def __post_init__(self):
        check_optional_str("image", self.image)
        check_optional_str("out", self.out)
        check_optional_str("run", self.run)
        super().__post_init__()
        check_choice("kernel", self.kernel, KERNEL_NAMES)
        check_int("kernel_seed", self.kernel_seed, 0)
        check_int("grid_channels", self.grid_channels, 1, 512)
        check_int("run_channels", self.run_channels, 1, 64)
        check_colormap("colormap", self.colormap)
        check_fraction("alpha", self.alpha)
