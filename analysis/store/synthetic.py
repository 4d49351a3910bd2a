"""A synthetic extract run written straight to Parquet with analysis/store/contract.py: no model, and no images
unless `pictures` are given (then DATA holds a file per ok image, for the report's thumbnails).

Used by the report tests (small runs, a planted channel, hostile file names) and by benchmarks/bench_report.py
(200,000 images x 13 layers). Values look like post-ReLU channel means: non-negative with many exact zeros. Every
layer has its peaks (each channel's favourite cell of the peak grid half the time, any cell otherwise) and the
deepest layer each class's Grad-CAM (a non-negative blob, zero away from it), with run.json's "peak_grid" and
"gradcam" for the run's image size, as the extract writes them; there are no contribution tables.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import yaml

from analysis.model.activations import compute_map_sizes, compute_peak_grids
from analysis.model.vgg16 import CONV_INDICES, make_vgg16
from analysis.store import contract, tables
from analysis.store.layout import Gradcam

ERROR_REASONS = ("truncated", "not an image", "empty file")


def make_image_ids(n: int, classes: Sequence[str], hostile: Sequence[str] = ()) -> list[str]:
    """`cat.0.jpg`, `dog.1.jpg`, ... (class i % K), with the hostile names replacing the first ones."""
    ids = [f"{classes[i % len(classes)]}.{i}.jpg" for i in range(n)]
    ids[: len(hostile)] = list(hostile)
    return ids


@dataclass(frozen=True)
class SyntheticRun:
    """What a synthetic run holds.

    planted=(layer, channel, class): that channel's values are shifted up on images of that class (by label when
    labeled, else by prediction), so it separates the classes and must rank first. The first `n_errors` images
    are decode errors (rows in predictions only). `labels` overrides the labels (None: unlabeled image).
    data, pictures: DATA/<image_id> for every ok image, with the bytes of pictures[i % len(pictures)].
    """

    n_images: int = 200
    layers: Mapping[str, int] = field(default_factory=lambda: {"conv4_3": 16, "conv5_3": 16})  # layer -> channels
    classes: Sequence[str] = ("cat", "dog")
    planted: tuple[str, int, str] | None = None
    labeled: bool = True
    n_errors: int = 0
    unit_size: int = 64
    seed: int = 0
    hostile: Sequence[str] = ()  # image ids that replace the first ones
    labels: Sequence[str | None] | None = None
    data: str | os.PathLike | None = None
    pictures: Sequence[bytes] = ()
    image_size: int = 64  # the crop the network saw: the peak and Grad-CAM grids follow from it


def write_synthetic_run(out: str | os.PathLike, spec: SyntheticRun | None = None) -> Path:
    """Write OUT/predictions, activations(_max)/<layer>, config.yaml and run.json as `spec` says; returns OUT."""
    out, spec = Path(out), spec or SyntheticRun()
    layers = dict(spec.layers)
    classes = list(spec.classes)
    n_images, n_errors, unit_size, seed = spec.n_images, spec.n_errors, spec.unit_size, spec.seed
    labeled, labels, planted, data = spec.labeled, spec.labels, spec.planted, spec.data
    rng = np.random.default_rng(seed)
    ids = make_image_ids(n_images, classes, spec.hostile)
    phashes = make_phashes(n_images, seed)
    if labels is None:
        labels = [classes[i % len(classes)] if labeled else None for i in range(n_images)]
    status = np.array([i >= n_errors for i in range(n_images)])
    logits = rng.normal(size=(n_images, len(classes))).astype(np.float32)
    if labeled:  # a mostly right classifier, so that there are correct predictions and a few mistakes
        for i, lab in enumerate(labels):
            if lab in classes:
                logits[i, classes.index(lab)] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    preds = [classes[k] for k in probs.argmax(axis=1)]
    group = [lab if labeled else p for lab, p in zip(labels, preds)]
    schema = contract.prediction_schema(classes, imagenet=False)
    act_schemas = {name: contract.activation_schema(c) for name, c in layers.items()}
    maps = SyntheticMaps.make(layers, spec.image_size, np.random.default_rng([seed, 20]))  # own stream: means stay
    for unit, lo in enumerate(range(0, n_images, unit_size)):
        hi = min(n_images, lo + unit_size)
        idx = np.arange(lo, hi)
        ok = status[lo:hi]
        rows = {
            contract.IMAGE_ID: ids[lo:hi],
            contract.SPLIT: [None] * len(idx),
            contract.LABEL: list(labels[lo:hi]),
            contract.STATUS: [contract.STATUS_OK if g else contract.STATUS_ERROR for g in ok],
            contract.ERROR: [None if g else ERROR_REASONS[i % len(ERROR_REASONS)] for i, g in zip(idx, ok)],
            contract.WIDTH: [500 if g else None for g in ok],
            contract.HEIGHT: [375 if g else None for g in ok],
            contract.FORMAT: ["JPEG" if g else None for g in ok],
            contract.SHA256: [hashlib.sha256(ids[i].encode("utf-8", "surrogateescape")).hexdigest() for i in idx],
            contract.PHASH: [int(phashes[i]) if g else None for i, g in zip(idx, ok)],
            contract.PRED: [preds[i] if g else None for i, g in zip(idx, ok)],
            contract.CONFIDENCE: [float(probs[i].max()) if g else None for i, g in zip(idx, ok)],
            contract.CORRECT: [
                (labels[i] == preds[i]) if g and labels[i] in classes else None for i, g in zip(idx, ok)
            ],
        }
        for k, c in enumerate(classes):
            rows[contract.logit_column(c)] = [float(logits[i, k]) if g else None for i, g in zip(idx, ok)]
            rows[contract.prob_column(c)] = [float(probs[i, k]) if g else None for i, g in zip(idx, ok)]
        tables.write_parquet_atomic(
            tables.make_prediction_table(rows, schema), out / contract.PREDICTIONS / contract.part_name(unit)
        )
        good = idx[ok]
        good_ids = [ids[i] for i in good]
        for name, channels in layers.items():
            means = np.maximum(rng.standard_normal((len(good), channels), dtype=np.float32), 0)  # (n, C)
            if planted and planted[0] == name:
                hit = np.array([group[i] == planted[2] for i in good], dtype=bool)
                means[hit, planted[1]] += 3.0
            maxes = means * np.float32(4.0) + rng.random((len(good), channels), dtype=np.float32)
            for stat, values in (("mean", means), ("max", maxes)):
                tables.write_parquet_atomic(
                    tables.make_activation_table(good_ids, values, act_schemas[name]),
                    contract.activation_dir(out, name, stat) / contract.part_name(unit),
                )
        maps.write(out, unit, good_ids, classes)
    if data is not None and spec.pictures:
        write_image_files(Path(data), [ids[i] for i in range(n_images) if status[i]], spec.pictures)
    write_run_metadata(
        out, spec, int(status.sum()), maps, os.path.abspath(data) if data is not None else "/nonexistent/synthetic-data"
    )
    return out


@dataclass(frozen=True)
class SyntheticMaps:
    """The peaks' grids and each channel's favourite cell, the Grad-CAM's layer and grid; `write` draws a unit."""

    peak_grid: Mapping[str, tuple[int, int]]
    favourite: Mapping[str, np.ndarray]  # layer -> (C,) a cell of its peak grid
    gradcam: Gradcam
    rng: np.random.Generator

    @classmethod
    def make(cls, layers: Mapping[str, int], image_size: int, rng: np.random.Generator) -> SyntheticMaps:
        """The grids of VGG16 at `image_size` (its architecture on the meta device: no weights are made)."""
        with torch.device("meta"):
            model = make_vgg16(2)
        grids = compute_peak_grids(model, list(layers), image_size)
        deepest = max(layers, key=CONV_INDICES.__getitem__)
        favourite = {name: rng.integers(0, h * w, layers[name]) for name, (h, w) in grids.items()}
        return cls(grids, favourite, Gradcam(deepest, compute_map_sizes(model, image_size)[deepest]), rng)

    def write(self, out: Path, unit: int, image_ids: Sequence[str], classes: Sequence[str]) -> None:
        """activations_peak/<layer>/ and gradcam/<class>/<layer>/ part `unit` for the ok images `image_ids`."""
        n, rng, name = len(image_ids), self.rng, contract.part_name(unit)
        for layer, (h, w) in self.peak_grid.items():
            c = len(self.favourite[layer])
            peaks = np.where(rng.random((n, c)) < 0.5, self.favourite[layer], rng.integers(0, h * w, (n, c)))
            schema = contract.activation_schema(c, contract.peak_type(h * w))
            tables.write_parquet_atomic(
                tables.make_activation_table(image_ids, peaks, schema),
                contract.activation_dir(out, layer, contract.STAT_PEAK) / name,
            )
        h, w = self.gradcam.grid
        schema = contract.activation_schema(h * w, column=contract.gradcam_column)
        y, x = np.mgrid[0:h, 0:w].reshape(2, 1, h * w)  # (1, h * w) each
        for cls in classes:
            cy, cx = rng.random((2, n, 1)) * [[[h]], [[w]]]  # (n, 1) each: the blob's centre
            d2 = ((y + 0.5 - cy) ** 2 + (x + 0.5 - cx) ** 2) / (max(h, w) / 4) ** 2
            cams = rng.exponential(1.0, (n, 1)) * np.maximum(np.exp(-d2 / 2) - 0.2, 0)  # (n, h * w), >= 0
            tables.write_parquet_atomic(
                tables.make_activation_table(image_ids, cams, schema),
                contract.gradcam_dir(out, cls, self.gradcam.layer) / name,
            )


def make_phashes(n: int, seed: int) -> np.ndarray:
    """(n,) int64 pHashes of n distinct pictures: random 64-bit values, whose pairs differ in 32 +- 4 bits (real
    photos: 32 +- 5, benchmarks/measure_phash.py), so a few pairs in a large run fall within the radius by chance."""
    return np.random.default_rng([seed, 64]).integers(
        np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64, endpoint=True
    )


def write_image_files(data: Path, image_ids: Sequence[str], pictures: Sequence[bytes]) -> None:
    """DATA/<id> holds pictures[i % len(pictures)]; every later file with the same bytes is a hard link to the first
    (not a symlink: read like any file), so 25,000 images take the room of len(pictures)."""
    data.mkdir(parents=True, exist_ok=True)
    first: dict[int, Path] = {}
    for i, image_id in enumerate(image_ids):
        path = data / image_id
        k = i % len(pictures)
        if k in first:
            os.link(first[k], path)
        else:
            tables.write_bytes_atomic(pictures[k], path)
            first[k] = path


def write_run_metadata(out: Path, spec: SyntheticRun, n_ok: int, maps: SyntheticMaps, data: str) -> None:
    n_images, layers, classes, size = spec.n_images, dict(spec.layers), list(spec.classes), spec.image_size
    extract = {
        "data": data,
        "out": str(out),
        "labels": None,
        "weights": "random",
        "classes": None,
        "classes_file": None,
        "preprocess": "imagenet",
        "image_size": size,
        "layers": list(layers),
        "batch_size": 8,
        "workers": 0,
        "device": "cpu",
        "precision": "fp32",
        "unit_size": 64,
        "seed": 0,
        "download": False,
        "progress": False,
        "max_image_pixels": 178956970,
        "max_file_bytes": 268435456,
        "imagenet_classes": {"cat": [281, 285], "dog": [151, 268]},
    }
    tables.write_bytes_atomic(
        yaml.safe_dump({"extract": extract}, sort_keys=False).encode(), out / contract.CONFIG_YAML
    )
    tables.write_json_atomic(
        {
            "tool": "cnn-blackbox",
            "format_version": contract.FORMAT_VERSION,
            "model": "vgg16",
            "weights": {
                "id": "random(seed=0)",
                "path": None,
                "sha256": None,
                "head": "imagenet",
                "random": True,
                "seed": 0,
            },
            "classes": list(classes),
            "layers": dict(layers),
            "peak_grid": {layer: list(grid) for layer, grid in maps.peak_grid.items()},
            "gradcam": maps.gradcam.to_dict(),
            "preprocess": {"name": "imagenet", "image_size": size, "resize": round(size * 256 / 224)},
            "precision": "fp32",
            "device": "cpu",
            "batch_size": 8,
            "workers": 0,
            "unit_size": 64,
            "versions": {"python": "3", "torch": "synthetic"},
            "data": {"path": data, "layout": "synthetic", "labels_csv": None, "fingerprint": "synthetic"},
            "complete": True,
            "finished": "2026-01-01T00:00:00+00:00",
            "counts": {
                "found": n_images,
                "ok": n_ok,
                "error": n_images - n_ok,
                "errors_by_reason": {},
                "skipped": 0,
                "skipped_by_reason": {},
                "skipped_examples": [],
                "labeled": n_ok,
                "correct": 0,
                "accuracy": None,
            },
            "timings": {"seconds": 1.0, "extract_seconds": 1.0, "images_per_s": float(n_images)},
        },
        out / contract.RUN_JSON,
    )
