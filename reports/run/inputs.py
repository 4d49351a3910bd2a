"""What the report page is built from: the overlays drawn for it, and every input of the page in one object, filled
once by jobs/report.py and read by the page's builders (reports/run/page.py, header.py, tiles.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from analysis.stats.summary import PredictionSummary


@dataclasses.dataclass
class Overlays:
    tiles: dict[tuple[str, str, int], str]  # (image_id, layer, channel) -> tile path relative to the page
    scales: dict[tuple[str, int], tuple[float, float]]  # (layer, channel) -> (vmin, vmax) of its colour scale
    unreadable: dict[str, str]  # image_id -> why it could not be re-run
    mismatches: list[dict[str, Any]]  # recomputed means that differ from the recorded ones
    checked: int  # channel means compared
    note: str | None  # why there are no overlays, or what differs from the run
    colormap: str = "viridis"  # of every tile: the galleries' colour bars show it
    views: dict[str, str] = dataclasses.field(default_factory=dict)  # image_id -> thumbnail of the crop it saw

    @classmethod
    def empty(cls, note: str | None) -> Overlays:
        """No overlays, and why."""
        return cls({}, {}, {}, [], 0, note)


@dataclasses.dataclass(frozen=True, eq=False)
class ReportInputs:
    """Everything the page shows. Paths are the run's and the page's folders; figures and tiles are relative to the
    page."""

    meta: Mapping[str, Any]  # the run's run.json
    run: Path
    out: Path
    summary: PredictionSummary
    stats: pd.DataFrame  # channel_stats
    examples: pd.DataFrame  # top_examples: the galleries' and the mistakes' images
    overlays: Overlays
    figures: Mapping[str, Any]  # report_pictures.write_figures
    layers: Sequence[str]  # the report's layers, deepest first
    top_channels: int  # rows of each channel table
    note: str | None  # report.note: a banner of the user's
    seconds: float  # the report's time so far
    mistake_drivers: Mapping[tuple[str, str], list[tuple[int, float]]]  # (image_id, layer) -> [(channel, value)]
    histograms: Mapping[str, Mapping[str, Any]] | None  # the channel browser's; None: no browser
    explorer: Mapping[str, Any] | None  # the map's and the image cards' data; None: no map
    dataset_issues: Mapping[str, Any]  # the dataset checks section (reports/run/dataset_issues.py)
    labels: Mapping[str, Any]  # where the labels came from (jobs/report_labels.py read_labels)
    # every channel's top images per scope, images named by their map row (reports/run/channel_galleries.py)
    channel_galleries: Mapping[str, Any] | None = None
    # the image cards' per-image files: parts, grid, classes; or no parts and why (reports/run/cards.py)
    cards: Mapping[str, Any] | None = None
    # the answer's concepts per class, with their region tiles (reports/run/concepts.py make_concept_section); None:
    # the concept stage did not run
    concepts: Mapping[str, Any] | None = None

    @property
    def classes(self) -> list[str]:
        """The run's classes, in the model's order."""
        return list(self.meta.get("classes") or [])
