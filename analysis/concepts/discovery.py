"""Finding each class's concepts: a seeded sample of up to `images_per_class` of the class's ok images, one forward
over the union of the samples (every class at once, in batches) that keeps the concept layer's maps, then an NMF of
each class's sample positions (analysis/concepts/nmf.py).

Memory: the sample maps are the only thing held, as rows of positions on the device: images_per_class x classes x
h x w x C float32 at most (2,000 x 2 x 14 x 14 x 512 x 4 bytes = 0.8 GB at conv5_3 with a 224 crop). They are kept
until the images they came from have been projected (their gradients need only the network above the layer).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import torch

from analysis.concepts.nmf import fit_nmf
from analysis.concepts.run_batches import PassSettings, iter_image_batches
from analysis.concepts.values import LayerSplit
from analysis.model.precision import autocast
from analysis.stats.groups import Groups
from analysis.stats.recompute import RunModel

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclasses.dataclass
class SampleMaps:
    """A class's sampled images and their maps as rows: image i's positions are rows i*h*w .. (i+1)*h*w - 1."""

    ids: list[str]
    rows: torch.Tensor | None  # (n * h * w, C) float32 on the device; None before the first image
    grid: tuple[int, int] = (0, 0)  # (h, w)

    def maps(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, C, h, w) maps of images start .. stop - 1 (channels_last strides)."""
        h, w = self.grid
        return self.rows[start * h * w : stop * h * w].reshape(stop - start, h, w, -1).permute(0, 3, 1, 2)


@dataclasses.dataclass(frozen=True)
class ClassConcepts:
    """One class's factorisation: its bases in the order found (the stage orders them by importance later)."""

    cls: str
    bases: torch.Tensor  # (k, C) on the device, unit L2 norm rows
    relative_error: float
    iterations: int
    n_sample: int


@dataclasses.dataclass(frozen=True)
class Samples:
    by_class: dict[int, list[str]]  # class index -> its sampled ids, in the run's order
    order: list[str]  # their union in the run's order: how the sample forward reads them

    @property
    def owner(self) -> dict[str, int]:
        return {image_id: j for j, ids in self.by_class.items() for image_id in ids}


def choose_samples(groups: Groups, ok_ids: Sequence[str], images_per_class: int, seed: int) -> Samples:
    """Up to images_per_class of each class's ok images, chosen by numpy's generator seeded with (seed, class
    index) among the class's images in `ok_ids`, kept in that order."""
    codes = groups.codes_of(ok_ids)
    chosen = np.zeros(len(ok_ids), dtype=bool)
    for j in range(len(groups.classes)):
        mine = np.flatnonzero(codes == j)
        if len(mine) > images_per_class:
            mine = mine[np.random.default_rng([seed, j]).choice(len(mine), images_per_class, replace=False)]
        chosen[mine] = True
    ids = [str(i) for i in np.asarray(ok_ids, dtype=object)[chosen]]
    picked = codes[chosen]
    return Samples({j: [i for i, c in zip(ids, picked) if c == j] for j in range(len(groups.classes))}, ids)


def collect_sample_maps(
    rm: RunModel, split: LayerSplit, samples: Samples, run: PassSettings, progress: Progress | None = None
) -> tuple[dict[int, SampleMaps], list[tuple[str, str]]]:
    """One forward (below the layer) over the union of the samples -> ({class: SampleMaps}, (id, why) of the images
    that could not be read now)."""
    owner = samples.owner
    kept = {j: SampleMaps([], None) for j in samples.by_class}
    failed: list[tuple[str, str]] = []
    done = 0
    for batch in iter_image_batches(rm.images, samples.order, rm.preprocessing, run):
        failed += batch.failed
        done += len(batch.ids) + len(batch.failed)
        if batch.ids:
            with autocast(run.device, run.precision):
                a = split.bottom(batch.x)
            for image_id, one in zip(batch.ids, a.float().permute(0, 2, 3, 1)):  # (h, w, C) each
                j = owner[image_id]
                _append(kept[j], image_id, one, len(samples.by_class[j]))
        if progress is not None:
            progress("sample", done, len(samples.order))
    for maps in kept.values():  # the rows of images that could not be read are dropped
        if maps.rows is not None:
            h, w = maps.grid
            maps.rows = maps.rows[: len(maps.ids) * h * w]
    return kept, failed


def _append(maps: SampleMaps, image_id: str, one: torch.Tensor, capacity: int) -> None:
    """one (h, w, C) -> the class's rows, allocated for its whole sample at the first image."""
    h, w, c = one.shape
    if maps.rows is None:
        maps.rows, maps.grid = one.new_empty(capacity * h * w, c), (h, w)
    n = len(maps.ids)
    maps.rows[n * h * w : (n + 1) * h * w] = one.reshape(h * w, c)
    maps.ids.append(image_id)


def fit_class_concepts(cls: str, maps: SampleMaps, k: int, seed: int) -> ClassConcepts:
    """The class's k concepts from its sample's positions (the caller has checked k and the rows' norm)."""
    found = fit_nmf(maps.rows, k, seed)
    return ClassConcepts(cls, found.bases, found.relative_error, found.iterations, len(maps.ids))
