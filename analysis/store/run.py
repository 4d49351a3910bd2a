"""A finished run, read in one place: its run.json, the keys of its config.yaml that say where its images were and
which model saw them, and those images found again (once) for whatever re-reads them.

Readers: the report (statistics, the overlays' re-run, the thumbnails), the inspect page's comparison with a run, and
finalize. config.yaml is the extract's resolved config (jobs/outputs.py writes it under `extract:`); only this module
knows its key names, and only for the keys below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from analysis.config import ConfigError, normalize_class_map, normalize_classes
from analysis.data.discovery import find_images
from analysis.data.preprocessing import Preprocessing, make_preprocessing
from analysis.data.sources import ImageRecord, read_bytes
from analysis.store import contract, manifest, tables

# What RUN must be, said when it has no run.json: to the report (the default), and to the inspect page.
EXTRACT_OUTPUT = "a finished extract output (its run.json is written last)"
DATASET_RUN = "a finished dataset run (the OUT of make analyze)"
GONE = "not found in DATA any more"  # why an image of the run has no picture now
_REQUIRED = object()


class RunSourceError(RuntimeError):
    """The run's config.yaml cannot be read, or its extract section lacks a key (or holds a wrong value); one line."""


@dataclass(frozen=True)
class RunSource:
    """The keys of a run's config.yaml (its extract section) that found, read and preprocessed its images and chose
    its model; the model keys have analysis/model/choice.py's names, so `load_chosen_model(source, ...)` loads it."""

    data: str  # DATA as the run was given it
    preprocessing: Preprocessing  # from preprocess and image_size
    max_file_bytes: int
    max_image_pixels: int
    weights: str
    classes: tuple[str, ...] | None
    classes_file: str | None
    imagenet_classes: tuple[tuple[str, int, int], ...]
    seed: int


@dataclass(frozen=True)
class RunImages:
    """The run's DATA, found again on first use and then kept: each image's bytes by id, no link followed out of
    DATA (analysis/data/sources.py). Shared by every reader of one report, so DATA is listed once."""

    data: str
    max_file_bytes: int
    max_image_pixels: int

    @cached_property
    def _found(self) -> tuple[dict[str, ImageRecord], str]:
        found = find_images(self.data)
        return {r.image_id: r for r in found.records}, os.path.realpath(found.root)

    def find(self) -> None:
        """List DATA now (once); discovery's DataError when it cannot be read at all."""
        self._found  # noqa: B018  (the cached listing)

    def read_bytes(self, image_id: str) -> bytes | None:
        """The image's bytes; None when DATA holds it no more; SourceError when it cannot be read now."""
        records, root = self._found
        record = records.get(image_id)
        return None if record is None else read_bytes(record, self.max_file_bytes, root)


@dataclass(frozen=True)
class FinishedRun:
    """A run whose run.json is written: its folder, run.json, and (read on first use) its source and images."""

    path: Path
    meta: Mapping[str, Any]  # run.json

    @cached_property
    def source(self) -> RunSource:
        """config.yaml's extract keys; RunSourceError when it cannot be read or lacks one."""
        return read_run_source(self.path)

    @cached_property
    def images(self) -> RunImages:
        """The run's images, found again when first read; RunSourceError when config.yaml cannot say where."""
        return RunImages(self.source.data, self.source.max_file_bytes, self.source.max_image_pixels)


def read_finished_run(path: str | os.PathLike, *, strict: bool = True, what: str = EXTRACT_OUTPUT) -> FinishedRun:
    """The run at `path`, or a one-line ConfigError that says what RUN must be (`what`).

    strict (the report): a run still missing units is refused first, naming its shards (manifest.check_complete),
    and so is a run.json that names no layers or no classes. Not strict (the inspect page, which says per layer what
    it cannot compare; finalize): run.json as it is.
    """
    if strict:
        manifest.check_complete(path)
    try:
        meta = tables.read_run_json(path)
    except FileNotFoundError:
        raise ConfigError(f"run {str(path)!r}: no {contract.RUN_JSON} there; RUN must be {what}") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"run {str(path)!r}: {contract.RUN_JSON} cannot be read ({e})") from None
    if strict and (not meta.get("layers") or not meta.get("classes")):
        raise ConfigError(f"run {str(path)!r}: {contract.RUN_JSON} names no layers or no classes")
    return FinishedRun(Path(path), meta)


def read_run_source(run: str | os.PathLike) -> RunSource:
    """RUN/config.yaml's extract keys, checked; RunSourceError naming the file and the key when one is wrong."""
    path = Path(run) / contract.CONFIG_YAML
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        reason = " ".join(str(e).split())  # YAML's messages span lines
        raise RunSourceError(f"{path} cannot be read ({type(e).__name__}: {reason})") from None
    ext = doc.get("extract") if isinstance(doc, Mapping) else None
    if not isinstance(ext, Mapping):
        raise RunSourceError(f"{path} has no extract section (a mapping: the extract job's resolved config)")

    def get(key: str, convert: Callable[[Any], Any], missing: Any = _REQUIRED) -> Any:
        """extract.<key>, converted; `missing` when it is absent, which a required key may not be."""
        if key not in ext:
            if missing is _REQUIRED:
                raise RunSourceError(f"{path}: extract.{key} is missing")
            return missing
        try:
            return convert(ext[key])
        except (TypeError, ValueError) as e:  # ConfigError is a ValueError
            raise RunSourceError(f"{path}: extract.{key}: {e}") from None

    preprocess, image_size = get("preprocess", _text), get("image_size", int)
    try:
        preprocessing = make_preprocessing(preprocess, image_size)
    except ValueError as e:
        raise RunSourceError(f"{path}: extract.preprocess, extract.image_size: {e}") from None
    return RunSource(
        data=get("data", _text),
        preprocessing=preprocessing,
        max_file_bytes=get("max_file_bytes", int),
        max_image_pixels=get("max_image_pixels", int),
        weights=get("weights", _text),
        classes=get("classes", lambda v: normalize_classes("classes", v), None),
        classes_file=get("classes_file", lambda v: None if v is None else _text(v), None),
        imagenet_classes=get("imagenet_classes", lambda v: normalize_class_map("imagenet_classes", v)),
        seed=get("seed", int, 0),
    )


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not allowed; a non-empty string")
    return value
