"""The concept stage over a finished run (issue #21), streamed: what the network sees for each class, as k concepts.

1. a seeded sample of up to images_per_class ok images per class; one forward over their union, below the concept
   layer, keeping its maps (the only thing held: analysis/concepts/discovery.py);
2. each class's k concepts: an NMF of its sample's positions (analysis/concepts/nmf.py);
3. every ok image once: the sampled ones from their held maps, the others through the network below the layer; the
   short backward from each class logit to the layer; each image projected on every class's concepts
   (analysis/concepts/values.py);
4. the tables (analysis/concepts/summary.py), written by `write_concept_tables`.

It never raises for bad input (a class with too few images or none, an unlabeled run, dead channels, random
weights, the run's images or weights gone): what it cannot compute it skips, with a note in `ConceptResult.notes`
and in the tables' metadata.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from analysis.concepts.discovery import ClassConcepts, Progress, choose_samples, collect_sample_maps, fit_class_concepts
from analysis.concepts.nmf import describe_method
from analysis.concepts.run_batches import PassSettings, iter_image_batches
from analysis.concepts.summary import ConceptRows, ConceptTables, make_concept_tables
from analysis.concepts.values import LayerSplit, compute_concept_values, iter_class_gradients
from analysis.data.discovery import DataError
from analysis.model.precision import autocast
from analysis.stats.groups import Groups
from analysis.stats.recompute import RecomputeError, RunModel, load_run_model
from analysis.store import concept_contract as cc
from analysis.store import contract, tables
from analysis.store.run import FinishedRun

METHOD = (
    "concepts as in CRAFT (Fel et al., CVPR 2023): per class, a non-negative matrix factorisation (Lee & Seung 1999) "
    "of the layer's post-ReLU activations at every position of a sample of the class's images; every image projected "
    "on the bases with the bases fixed (non-negative least squares); a concept's contribution to the class logit is "
    "gradient x activation projected on it: sum_p U[p, j] * (basis_j . dlogit/dA[p])"
)


@dataclasses.dataclass(frozen=True)
class ConceptSettings:
    layer: str  # concept_contract.CONCEPT_LAYERS
    concepts: int  # k per class (fewer for a class with fewer images)
    images_per_class: int  # the sample factorised per class
    batch_size: int
    seed: int  # of the sample


@dataclasses.dataclass(frozen=True)
class ConceptResult:
    images: pd.DataFrame  # concept_images.parquet's rows
    concepts: pd.DataFrame  # concepts.parquet's rows
    residuals: pd.DataFrame  # image_id, class, residual, total: per image and class, what no concept holds
    meta: dict  # the tables' metadata (method, parameters, per-class figures, notes)
    notes: tuple[str, ...]  # what was skipped or changed, one line each


def compute_concepts(
    run: FinishedRun,
    predictions: pd.DataFrame,
    groups: Groups,
    settings: ConceptSettings,
    device: torch.device,
    progress: Progress | None = None,
    *,
    model: RunModel | None = None,
) -> ConceptResult:
    """The concepts of every class of `groups` at settings.layer, and every ok image of `predictions` on them.
    progress(what, done, total) is told of each batch ("sample", then "images"); model: the run's, when the caller
    has loaded it (load_run_model) to refuse a run whose weights are gone before anything else."""
    t0 = time.perf_counter()
    notes: list[str] = []
    if groups.by == contract.GROUP_PRED:
        notes.append("unlabeled run: each class's concepts come from the images predicted as it")
    ok_ids = [str(i) for i in predictions.loc[predictions[contract.STATUS] == contract.STATUS_OK, contract.IMAGE_ID]]
    try:
        rm = model or load_run_model(run)
        rm.images.find()
    except RecomputeError as e:
        return _result(None, settings, {}, [*notes, f"no concepts: {e}"])
    except DataError as e:
        return _result(None, settings, {}, [*notes, f"no concepts: the run's DATA cannot be read any more: {e}"])
    notes += rm.notes
    precision = str(run.meta.get("precision") or "fp32")
    how = PassSettings(device, precision, settings.batch_size)
    net = rm.loaded.model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)  # as extract
    split = LayerSplit(net, settings.layer)
    samples = choose_samples(groups, ok_ids, settings.images_per_class, settings.seed)
    clock = _Clock()
    maps, failed = collect_sample_maps(rm, split, samples, how, progress)
    clock.lap("sample_forward")
    found = _fit_classes(groups.classes, samples.by_class, maps, settings, notes)
    clock.lap("fit")
    rows = ConceptRows(list(found))
    sampled = set(samples.order)
    rest = [i for i in ok_ids if i not in sampled]
    if found:
        stream = _Stream(split, rm, found, how)
        for m in maps.values():  # the sampled images from their held maps, then their maps are let go
            for start in range(0, len(m.ids), settings.batch_size):
                stop = min(start + settings.batch_size, len(m.ids))
                rows.add(m.ids[start:stop], stream.project(m.maps(start, stop)))
            m.rows = None
        clock.lap("project_sample")
        failed += stream.project_images(rest, rows, progress)
        clock.lap("stream")
    if failed:
        first, why = failed[0]
        notes.append(f"{len(failed)} images could not be read now and have no concepts (first: {first!r}, {why})")
    made = make_concept_tables(rows, found, groups, ok_ids, settings.layer) if found else None
    meta = {"device": str(device), "precision": precision, "group_by": groups.by, "crop": rm.preprocessing.crop}
    meta["images"] = {"sampled": len(samples.order), "streamed": len(rest) if found else 0}
    meta["seconds"] = {"total": round(time.perf_counter() - t0, 2), **clock.laps}
    return _result(made, settings, meta, notes)


class _Clock:
    """Seconds of each step, for the metadata (and benchmarks/bench_concepts.py)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def _fit_classes(
    classes: Sequence[str], sampled: dict[int, list[str]], maps: dict, settings: ConceptSettings, notes: list[str]
) -> dict[int, ClassConcepts]:
    """{class index: its concepts} for the classes that have any; a note for each class skipped or given fewer."""
    found = {}
    for j, cls in enumerate(classes):
        k = min(settings.concepts, len(maps[j].ids))
        if not sampled[j]:
            notes.append(f"class {cls!r}: no ok images; no concepts")
        elif k == 0:
            notes.append(f"class {cls!r}: none of its images could be read now; no concepts")
        elif not bool(maps[j].rows.any()):
            notes.append(f"class {cls!r}: its activations at {settings.layer} are all zero (dead channels); skipped")
        else:
            if k < settings.concepts:
                notes.append(f"class {cls!r}: {k} images, fewer than {settings.concepts} concepts: {k} concepts")
            found[j] = fit_class_concepts(cls, maps[j], k, settings.seed)
    return found


@dataclasses.dataclass(frozen=True)
class _Stream:
    """Batches of maps, or of images, projected on every class's concepts."""

    split: LayerSplit
    rm: RunModel
    found: dict[int, ClassConcepts]
    how: PassSettings

    def project(self, maps: torch.Tensor) -> dict:
        """A batch's maps (B, C, h, w) -> {class index: ConceptValues} on each class's concepts."""
        crop = self.rm.preprocessing.crop
        grads = iter_class_gradients(self.split, self.rm.loaded, maps, list(self.found), self.how.precision)
        return {j: compute_concept_values(maps, g, self.found[j].bases, crop) for j, g in grads}

    def project_images(self, ids: list[str], rows: ConceptRows, progress: Progress | None) -> list[tuple[str, str]]:
        """Every image of `ids` read, run below the layer and projected into `rows`; those not read now."""
        failed, done = [], 0
        for batch in iter_image_batches(self.rm.images, ids, self.rm.preprocessing, self.how):
            failed += batch.failed
            if batch.ids:
                with autocast(self.how.device, self.how.precision):
                    a = self.split.bottom(batch.x)
                rows.add(batch.ids, self.project(a))
            done += len(batch.ids) + len(batch.failed)
            if progress is not None:
                progress("images", done, len(ids))
        return failed


def _result(made: ConceptTables | None, settings: ConceptSettings, extra: dict, notes: Sequence[str]) -> ConceptResult:
    meta = {
        "method": METHOD,
        "nmf": describe_method(),
        "library": f"torch {torch.__version__} (analysis/concepts/nmf.py)",
        "layer": settings.layer,
        "k": settings.concepts,
        "images_per_class": settings.images_per_class,
        "seed": settings.seed,
        "share": "importance / the sum of the class's positive parts: its concepts' positive importances and the "
        "residual's mean when positive (classes.*.residual_share); the layer's total, sum over positions and "
        "channels of A * dlogit/dA, is classes.*.total",
        "peak_y, peak_x": "pixels of the crop the network saw: the centre of the peak's cell",
        "classes": made.classes if made else {},
        **extra,
        "notes": list(notes),
    }
    empty = ConceptTables(
        cc.CONCEPT_IMAGES_SCHEMA.empty_table().to_pandas(),
        cc.CONCEPTS_SCHEMA.empty_table().to_pandas(),
        pd.DataFrame(),
        {},
    )
    made = made or empty
    return ConceptResult(made.images, made.concepts, made.residuals, meta, tuple(notes))


def write_concept_tables(out_dir: str | Path, result: ConceptResult) -> tuple[Path, Path]:
    """OUT/report/concept_images.parquet and concepts.parquet, each written atomically with the metadata; their
    paths."""
    out_dir = Path(out_dir)
    images, concepts = out_dir / cc.CONCEPT_IMAGES, out_dir / cc.CONCEPTS
    tables.write_table(result.images, cc.CONCEPT_IMAGES_SCHEMA, images, result.meta)
    tables.write_table(result.concepts, cc.CONCEPTS_SCHEMA, concepts, result.meta)
    return images, concepts
