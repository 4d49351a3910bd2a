"""Where the extract job's files go, and the metadata written with them."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import platform
import shutil
import time
from collections import Counter
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Sequence

import yaml

from analysis import storage
from analysis.config import ConfigError

log = logging.getLogger("cnn_blackbox")
TOOL = "cnn-blackbox"
_TABLE_DIRS = (storage.PREDICTIONS, storage.ACTIVATIONS, storage.ACTIVATIONS_MAX, "report")


def resolve_out(data: str, out: str | None) -> Path:
    """OUT, or runs/<name of DATA> (a zip's name without .zip)."""
    if out:
        return Path(out)
    name = Path(data.rstrip("/\\")).name
    return Path("runs") / (name[:-4] if name.lower().endswith(".zip") else name or "data")


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse to mix with a run already in OUT unless told to replace it; then remove only our own files."""
    present = [d for d in (storage.RUN_JSON, *_TABLE_DIRS) if (out / d).exists()]
    if not present:
        return
    if not overwrite:
        raise ConfigError(f"OUT {str(out)!r} already holds a run ({', '.join(present)}); "
                          "pass --overwrite (make: ARGS=--overwrite) or choose another OUT")
    (out / storage.RUN_JSON).unlink(missing_ok=True)  # first: the run stops looking complete
    for d in _TABLE_DIRS:
        if (out / d).is_dir():
            shutil.rmtree(out / d)


def warn_unknown_labels(records: Sequence, classes: Sequence[str]) -> None:
    unknown = Counter(r.label for r in records if r.label is not None and r.label not in classes)
    if unknown:
        log.warning("labels not among the model's classes %s (their `correct` is null): %s",
                    list(classes), dict(unknown.most_common(10)))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "pillow", "pyarrow", "pandas", "matplotlib"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def make_metadata(cfg, found, loaded, channels: dict[str, int], preprocessing, device, precision: str,
                  workers: int) -> dict[str, Any]:
    """What produced these tables: stored in every Parquet file's key-value metadata and in run.json."""
    return {
        "tool": TOOL,
        "format_version": storage.FORMAT_VERSION,
        "model": "vgg16",
        "weights": {"id": loaded.weights_id, "path": loaded.weights_path, "sha256": loaded.weights_sha256,
                    "head": loaded.head, "random": loaded.random,
                    "seed": cfg.seed if loaded.random else None},
        "classes": list(loaded.classes),
        "class_map": [list(m) for m in loaded.class_map] if loaded.class_map else None,
        "layers": dict(channels),
        "preprocess": preprocessing.describe(),
        "precision": precision,
        "device": str(device),
        "batch_size": cfg.batch_size,
        "workers": workers,
        "unit_size": cfg.unit_size,
        "versions": _versions(),
        "data": {"path": found.root, "layout": found.layout, "labels_csv": cfg.labels,
                 "fingerprint": fingerprint(r.image_id for r in found.records)},
    }


def fingerprint(image_ids) -> str:
    """sha256 of the sorted image ids: tells whether two runs saw the same file list."""
    h = hashlib.sha256()
    for i in image_ids:
        h.update(i.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_config(out: Path, cfg) -> None:
    values = {k: _plain(v) for k, v in dataclasses.asdict(cfg).items()}
    values["imagenet_classes"] = {name: [lo, hi] for name, lo, hi in cfg.imagenet_classes}
    storage.write_bytes_atomic(yaml.safe_dump({"extract": values}, sort_keys=False).encode(), out / storage.CONFIG_YAML)


def write_run_json(out: Path, meta: dict, found, counts: dict, writer, t0: float, loop_seconds: float) -> dict:
    import pyarrow.compute as pc  # noqa: PLC0415  (only needed once, at the end)
    import pyarrow.dataset as ds  # noqa: PLC0415

    preds = ds.dataset(out / storage.PREDICTIONS, format="parquet").to_table(
        columns=[storage.STATUS, storage.ERROR, storage.LABEL, storage.CORRECT])
    errors = Counter(e for e in preds.column(storage.ERROR).to_pylist() if e is not None)
    labeled = int(pc.sum(pc.is_valid(preds.column(storage.CORRECT))).as_py() or 0)
    correct = int(pc.sum(preds.column(storage.CORRECT)).as_py() or 0) if labeled else 0
    total = time.perf_counter() - t0
    summary = {
        **meta,
        "complete": True,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "counts": {"found": found.n_images, "ok": counts["ok"], "error": counts["error"],
                   "errors_by_reason": dict(errors.most_common()),
                   "skipped": sum(found.skipped.values()), "skipped_by_reason": dict(found.skipped),
                   "skipped_examples": [list(e) for e in found.skipped_examples],
                   "labeled": labeled, "correct": correct,
                   "accuracy": correct / labeled if labeled else None},
        "timings": {"seconds": round(total, 3), "extract_seconds": round(loop_seconds, 3),
                    "images_per_s": round(found.n_images / loop_seconds, 3) if loop_seconds > 0 else None},
        "tables": {"units": writer.unit, "files": writer.files_written},
    }
    storage.write_json_atomic(summary, out / storage.RUN_JSON)
    return summary


def log_summary(out: Path, s: dict) -> None:
    c = s["counts"]
    acc = f"accuracy {c['accuracy']:.1%} on {c['labeled']} labeled" if c["accuracy"] is not None else "unlabeled"
    log.info("done: %d ok, %d error, %d skipped; %s; %.1f img/s on %s (%s)", c["ok"], c["error"], c["skipped"],
             acc, s["timings"]["images_per_s"] or 0.0, s["device"], s["precision"])
    if c["errors_by_reason"]:
        log.info("errors by reason: %s", c["errors_by_reason"])
    log.info("outputs in %s: predictions/, activations/<layer>/, activations_max/<layer>/, run.json", out)
