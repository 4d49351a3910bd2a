"""What the extract job records about a run: its metadata (every table's and run.json's), the run manifest, each unit
manifest's stamp, the resolved config, and the summary it logs when the run is complete."""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import yaml

from analysis.data.discovery import Discovery
from analysis.data.preprocessing import Preprocessing
from analysis.model.vgg16 import LoadedModel
from analysis.store import contract, manifest, tables
from analysis.store.layout import ValueLayout
from analysis.store.shards import Shard
from jobs.config import ExtractConfig
from jobs.runtime import Execution

log = logging.getLogger("cnn_blackbox")
TOOL = "cnn-blackbox"


def make_run_manifest(meta: dict, found: Discovery, cfg: ExtractConfig, shard: Shard) -> dict:
    """What OUT/manifest.json records: the identity, the creator's metadata and what finalize needs."""
    identity = manifest.make_identity(meta, found.records, cfg.max_image_pixels, cfg.max_file_bytes)
    return {
        "tool": TOOL,
        "identity": identity,
        "identity_sha256": manifest.compute_identity_digest(identity),
        "meta": meta,
        "created": manifest.now(),
        "created_unix": time.time(),
        "n_images": found.n_images,
        "unit_size": cfg.unit_size,
        "n_units": -(-found.n_images // cfg.unit_size),
        "shards": shard.count,
        "discovery": {
            "root": found.root,
            "layout": found.layout,
            "skipped": dict(found.skipped),
            "skipped_examples": [list(e) for e in found.skipped_examples],
        },
    }


def make_unit_stamp(run: dict, shard: Shard, execution: Execution) -> dict:
    """Fields of every unit manifest this process writes."""
    return {
        "identity_sha256": run["identity_sha256"],
        "shard": str(shard),
        "device": str(execution.device),
        "batch_size": execution.batch_size,
        "decode": execution.decode,  # cpu | gpu, as run; run.json names every one (not the identity: a run resumes)
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "pillow", "pyarrow", "pandas", "matplotlib"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def make_metadata(
    cfg: ExtractConfig,
    found: Discovery,
    loaded: LoadedModel,
    values: ValueLayout,
    preprocessing: Preprocessing,
    execution: Execution,
    label_map: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What produced these tables: stored in every Parquet file's key-value metadata and in run.json."""
    return {
        "tool": TOOL,
        "format_version": contract.FORMAT_VERSION,
        "model": "vgg16",
        "weights": {
            "id": loaded.weights_id,
            "path": loaded.weights_path,
            "sha256": loaded.weights_sha256,
            "head": loaded.head,
            "random": loaded.random,
            "seed": cfg.seed if loaded.random else None,
            "verified": loaded.weights_verified,
        },  # False: the file is not what the id names
        "classes": list(loaded.classes),
        "class_map": [list(m) for m in loaded.class_map] if loaded.class_map else None,
        **values.to_meta(),  # layers, attribution, peak_grid ({layer: [h, w]}) and gradcam ({"layer", "grid"})
        "preprocess": preprocessing.describe(),
        "precision": execution.precision,
        "device": str(execution.device),
        "batch_size": execution.batch_size,
        "workers": execution.workers,
        "unit_size": cfg.unit_size,
        "versions": _versions(),
        "data": {
            "path": found.root,
            "layout": found.layout,
            "labels_csv": cfg.labels,
            "label_map": dict(label_map or {}),
            # sha256 of the sorted image ids: tells whether two runs saw the same file list
            "fingerprint": manifest.compute_ids_digest(r.image_id for r in found.records),
        },
    }


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_config(out: Path, cfg: ExtractConfig) -> None:
    """OUT/config.yaml: the resolved config, every value that was used."""
    values = {k: _plain(v) for k, v in dataclasses.asdict(cfg).items()}
    values["imagenet_classes"] = {name: [lo, hi] for name, lo, hi in cfg.imagenet_classes}
    tables.write_bytes_atomic(yaml.safe_dump({"extract": values}, sort_keys=False).encode(), out / contract.CONFIG_YAML)


def log_summary(out: Path, s: dict) -> None:
    """The lines that end a complete run: counts, speed, where the tables are (s: run.json)."""
    c = s["counts"]
    acc = f"accuracy {c['accuracy']:.1%} on {c['labeled']} labeled" if c["accuracy"] is not None else "unlabeled"
    log.info(
        "done: %d ok, %d error, %d skipped; %s; %.1f img/s on %s (%s)",
        c["ok"],
        c["error"],
        c["skipped"],
        acc,
        s["timings"]["images_per_s"] or 0.0,
        s["device"],
        s["precision"],
    )
    if c["errors_by_reason"]:
        log.info("errors by reason: %s", c["errors_by_reason"])
    log.info(
        "outputs in %s: predictions/, activations/<layer>/, activations_max/<layer>/, activations_peak/<layer>/, "
        "run.json",
        out,
    )
