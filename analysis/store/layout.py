"""What a run owns in OUT, listed once: used by --overwrite (what is moved aside), resume (where stale temp files
are looked for), finalize (which parts every unit must have) and the completeness checks.

    OUT/manifest.json  run.json  config.yaml          the run's files
    OUT/units/                                         one manifest per committed unit
    OUT/predictions/  activations/<layer>/  activations_max/<layer>/  activations_peak/<layer>/
        attributions/<class>/<layer>/  gradcam/<class>/<layer>/   the tables, one part per unit in each folder
    OUT/report/                                        the report stage's tables and page (its default --out)

Anything else in OUT (a file the user put there) is no run's and is left alone.

A unit's values, (B_ok, width) float32 per batch, have one column layout (`ValueLayout`): the means of every layer in
order, the maxima of every layer in order, the peaks of every layer in order (flat indices, exact in float32 below
2**24, written as integers), then the contributions by class then layer, then the Grad-CAMs by class. The forward
concatenates in that order, the writer slices by it, and resume and finalize list a unit's tables from it. A run
begun before the peaks and Grad-CAMs existed has neither (its metadata has no "peak_grid"): its layout has none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from analysis.store import contract

MANIFEST_JSON = "manifest.json"
UNITS = "units"
TABLES = (
    contract.PREDICTIONS,
    contract.ACTIVATIONS,
    contract.ACTIVATIONS_MAX,
    contract.ACTIVATIONS_PEAK,
    contract.ATTRIBUTIONS,
    contract.GRADCAM,
)
# Every top-level entry of OUT that a run writes, run.json first: moved aside first, a replaced run stops looking
# complete before anything else of it goes.
RUN_ENTRIES = (contract.RUN_JSON, MANIFEST_JSON, contract.CONFIG_YAML, UNITS, *TABLES, contract.REPORT_DIR)


def find_run_entries(out: str | os.PathLike) -> list[str]:
    """The entries of RUN_ENTRIES present in OUT, in that order."""
    out = Path(out)
    return [name for name in RUN_ENTRIES if os.path.lexists(out / name)]


CONTRIBUTION = "contribution"  # the kind of a block of contributions (the others: contract.STAT_MEAN, STAT_MAX)
GRADCAM = contract.GRADCAM  # the kind of a block of Grad-CAMs (one class's map at one layer, h * w columns)
_STATS = (contract.STAT_MEAN, contract.STAT_MAX, contract.STAT_PEAK)  # the kinds of a layer's activation tables


@dataclass(frozen=True)
class Attribution:
    """What the contribution tables hold: each class's logit attributed to the channels of each layer. run.json and
    manifest.json carry it as a dict (`to_dict`); the run's identity takes its layers and classes."""

    layers: tuple[str, ...]  # in network order
    classes: tuple[str, ...]  # the head's classes, in logit order
    channels: Mapping[str, int]  # layer -> channels
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "classes": list(self.classes),
            "channels": dict(self.channels),
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Attribution | None:
        """The run metadata's "attribution"; None (or nothing) for a run that attributes nothing."""
        if not doc:
            return None
        return cls(tuple(doc["layers"]), tuple(doc["classes"]), dict(doc["channels"]), doc["method"])


@dataclass(frozen=True)
class Gradcam:
    """What the Grad-CAM tables hold: each attributed class's map at `layer` (the deepest attributed layer), of
    grid (h, w) cells. run.json and manifest.json carry it as {"layer": ..., "grid": [h, w]}."""

    layer: str
    grid: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "grid": list(self.grid)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> Gradcam | None:
        return cls(doc["layer"], tuple(doc["grid"])) if doc else None


@dataclass(frozen=True)
class ValueBlock:
    """The columns of one table in a unit's values: a layer's channel means, maxima or peaks, its channels'
    contributions to one class, or one class's Grad-CAM at the layer."""

    kind: str  # contract.STAT_MEAN, STAT_MAX, STAT_PEAK, CONTRIBUTION or GRADCAM
    layer: str
    cls: str | None  # the class of a block of contributions or Grad-CAMs, else None
    start: int
    stop: int

    @property
    def columns(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def width(self) -> int:
        return self.stop - self.start

    def folder(self, out: str | os.PathLike) -> Path:
        """OUT/activations(_max, _peak)/<layer>, OUT/attributions/<class>/<layer> or OUT/gradcam/<class>/<layer>."""
        if self.kind == CONTRIBUTION:
            return contract.attribution_dir(out, self.cls, self.layer)
        if self.kind == GRADCAM:
            return contract.gradcam_dir(out, self.cls, self.layer)
        return contract.activation_dir(out, self.layer, self.kind)


@dataclass(frozen=True)
class ValueLayout:
    """The column layout of a unit's values, defined once: the means of every layer in order, the maxima of every
    layer in order, the peaks of every layer in order, then the contributions by class then layer, then the
    Grad-CAMs by class (`blocks`, in column order)."""

    channels: Mapping[str, int]  # layer -> channels, in network order
    attribution: Attribution | None = None
    peak_grid: Mapping[str, tuple[int, int]] | None = None  # layer -> (h, w) its peaks index; None: no peak tables
    gradcam: Gradcam | None = None  # None: no Grad-CAM tables (always None without attribution)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ValueLayout:
        """The layout of a run from its metadata (manifest.json's "meta", run.json)."""
        grids = meta.get("peak_grid")
        return cls(
            dict(meta["layers"]),
            Attribution.from_dict(meta.get("attribution")),
            {layer: tuple(grid) for layer, grid in grids.items()} if grids else None,
            Gradcam.from_dict(meta.get("gradcam")),
        )

    def to_meta(self) -> dict[str, Any]:
        """The run metadata's keys that `from_meta` reads back."""
        return {
            "layers": dict(self.channels),
            "attribution": self.attribution.to_dict() if self.attribution else None,
            "peak_grid": {layer: list(grid) for layer, grid in self.peak_grid.items()} if self.peak_grid else None,
            "gradcam": self.gradcam.to_dict() if self.gradcam else None,
        }

    @cached_property
    def blocks(self) -> tuple[ValueBlock, ...]:
        stats = _STATS if self.peak_grid else _STATS[:2]
        keys = [(stat, layer, None, c) for stat in stats for layer, c in self.channels.items()]
        a, g = self.attribution, self.gradcam
        if a is not None:
            keys += [(CONTRIBUTION, layer, cls, a.channels[layer]) for cls in a.classes for layer in a.layers]
            if g is not None:
                keys += [(GRADCAM, g.layer, cls, g.grid[0] * g.grid[1]) for cls in a.classes]
        blocks, start = [], 0
        for kind, layer, cls, c in keys:
            blocks.append(ValueBlock(kind, layer, cls, start, start + c))
            start += c
        return tuple(blocks)

    @property
    def width(self) -> int:
        return self.blocks[-1].stop if self.blocks else 0

    def tables(self) -> list[ValueBlock]:
        """The blocks in the order a unit writes its tables: each layer's means, maxima and peaks, then the
        contributions (by class then layer), then the Grad-CAMs (by class)."""
        by_key = {(b.kind, b.layer): b for b in self.blocks if b.kind in _STATS}
        return [by_key[(stat, layer)] for layer in self.channels for stat in _STATS if (stat, layer) in by_key] + [
            b for b in self.blocks if b.kind not in _STATS
        ]


def unit_dirs(out: str | os.PathLike, values: ValueLayout) -> list[Path]:
    """Every folder a unit writes a part into, the predictions' first and its manifest's last."""
    out = Path(out)
    return [out / contract.PREDICTIONS] + [block.folder(out) for block in values.tables()] + [out / UNITS]


def list_unit_parts(values: ValueLayout, unit: int) -> list[str]:
    """The Parquet parts unit `unit` must have, as its manifest names them (paths relative to OUT)."""
    return [(folder / contract.part_name(unit)).as_posix() for folder in unit_dirs(Path(""), values)[:-1]]
