"""The sections that lay the network's maps over the crop it saw: Grad-CAM (right after the answer), one section
per layer (feature maps, channel means, the top channel over the image, each channel's contribution), and the
channels a dataset run ranked most selective, each over this image. `Backdrop`: the crop and how a map is laid over
it. Titles carry no step number: the page numbers its sections in the order they are added.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from analysis.model.attribution import GRADCAM_LAYER
from analysis.stats.run_channels import RunComparison
from analysis.walkthrough.inspection import Answer, LayerMaps
from reports.encode import encode_png
from reports.inspect import figures as figs
from reports.inspect.html import Page
from reports.overlays import make_overlay


@dataclasses.dataclass(frozen=True, eq=False)
class Backdrop:
    """The crop the network saw, (N, N, 3) uint8, and how a map is laid over it: colormap and blending alpha."""

    view: np.ndarray
    cmap: str
    alpha: float

    def overlay(self, fmap: np.ndarray, vmax: float) -> np.ndarray:
        """(N, N, 3) uint8: `fmap` upsampled onto the crop, coloured from 0 to vmax."""
        return make_overlay(self.view, fmap, 0.0, vmax, self.cmap, self.alpha)


def add_layer_section(page: Page, lm: LayerMaps, backdrop: Backdrop, max_tiles: int, cls: str) -> None:
    """One layer: its feature maps, its channel means, the top channel over the image, and which channels the
    answer (`cls`) leaned on."""
    c, h, w = lm.maps.shape
    page.section(f"layer-{lm.layer}", f"{lm.layer}: feature maps and channels")
    page.figure(
        f"features_{lm.layer}.png",
        encode_png(figs.make_feature_grid_figure(lm.maps, lm.means, lm.layer, max_tiles)),
        f"Feature maps of {lm.layer} ({c} channels of {h}x{w}, after ReLU): the {min(c, max_tiles)} channels "
        "with the highest mean first, each labelled with its index and mean; one colour scale for the grid.",
    )
    page.figure(
        f"means_{lm.layer}.png",
        encode_png(figs.make_means_figure(lm.means, lm.layer, lm.top)),
        f"Mean activation of each of the {c} channels of {lm.layer}; the highest, channel {lm.top} "
        f"({float(lm.means[lm.top]):.4g}), is red.",
    )
    fmap = lm.maps[lm.top]
    vmax = max(float(fmap.max()), 1e-12)
    view, cmap = backdrop.view, backdrop.cmap
    overlay = backdrop.overlay(fmap, vmax)
    page.figure(
        f"overlay_{lm.layer}.png",
        encode_png(
            figs.make_overlay_figure(
                view, fmap, overlay, 0.0, vmax, cmap, f"{lm.layer} channel {lm.top}, the highest mean"
            )
        ),
        f"Channel {lm.top} of {lm.layer} over the crop: its {h}x{w} map upsampled bilinearly to "
        f"{view.shape[1]}x{view.shape[0]}, coloured with {cmap} from 0 to its maximum here ({vmax:.4g}) and blended "
        f"at alpha {backdrop.alpha}.",
    )
    if lm.contrib is not None:
        top = lm.top_contrib
        page.figure(
            f"contrib_{lm.layer}.png",
            encode_png(figs.make_contribution_figure(lm.contrib, lm.layer, lm.top, cls)),
            f"Each channel's contribution to the logit of {cls}, the answer: the sum over the map of the "
            f"activation times the logit's gradient (gradient x activation). The article's channel, the one "
            f"with the highest mean, is c{lm.top} ({float(lm.contrib[lm.top]):.4g}); the channel the "
            f"classifier leaned on most is c{top} ({float(lm.contrib[top]):.4g}).",
        )


def add_gradcam_section(page: Page, gradcams: dict[str, np.ndarray], backdrop: Backdrop, answer: Answer) -> None:
    """Where in the image the evidence for each class lies: Grad-CAM at the last conv layer, shown right after the
    answer."""
    page.section("gradcam", f"Where the evidence lies: Grad-CAM at {GRADCAM_LAYER}")
    vmaxes = {cls: float(cam.max()) for cls, cam in gradcams.items()}
    overlays = {cls: backdrop.overlay(cam, max(vmaxes[cls], 1e-12)) for cls, cam in gradcams.items()}
    page.figure(
        "gradcam.png",
        encode_png(figs.make_gradcam_figure(backdrop.view, overlays, vmaxes)),
        f"Grad-CAM (Selvaraju et al. 2017) of each class: ReLU of the {GRADCAM_LAYER} maps weighted by the "
        "mean gradient of the class logit, upsampled onto the crop; each map on its own colour scale "
        f"({backdrop.cmap}, 0 to its maximum, stated above it). The answer is {answer.classes[answer.pred]}.",
    )


def add_run_section(
    page: Page,
    run: str,
    notes: Sequence[str],
    comparisons: Sequence[RunComparison],
    maps: dict[str, LayerMaps],
    backdrop: Backdrop,
) -> None:
    """The channels the dataset run ranked most selective for the predicted class, and where this image falls."""
    page.section("run", "What the dataset run says")
    page.text(
        f"Run: {run}. For each layer, the channels that run ranked most selective for the predicted class, "
        "over this image, and where this image's mean of each falls among the run's images."
    )
    for note in notes:
        page.note(f"Caution: {note}.")
    for comp in comparisons:
        page.heading(f"{comp.layer}: channels selective for {comp.cls}")
        if comp.ranking is None:
            page.note(f"No ranking for {comp.layer}: {comp.reason}.")
            continue
        r = comp.ranking
        page.text(
            f"Ranked by {r.score_name} of the class against the rest, grouping images by {r.group_by}; "
            f"source: {r.source}."
        )
        rows = []
        for rank, ch in enumerate(comp.channels, 1):
            fmap = maps[comp.layer].maps[ch.channel]
            overlay = backdrop.overlay(fmap, ch.vmax)
            fig = figs.make_run_channel_figure(
                overlay,
                ch.run_values,
                ch.value,
                ch.percentile,
                f"{comp.layer} channel {ch.channel}: rank {rank} for {comp.cls} ({r.score_name} {ch.score:.3f})",
                f"channel {ch.channel} mean over the run's {len(ch.run_values)} images",
            )
            page.figure(
                f"run_{comp.layer}_c{ch.channel}.png",
                encode_png(fig),
                f"Left: channel {ch.channel} over the crop, coloured from 0 to {ch.vmax:.4g} (the 99th "
                "percentile of its maximum over the run, so a weak response looks weak). Right: the run's "
                f"distribution of its mean; this image's mean {ch.value:.4g} is at percentile "
                f"{ch.percentile:.1f}.",
                alt=f"{comp.layer} channel {ch.channel} over the image, and the run's distribution of its mean",
            )
            med = float(np.median(ch.run_values)) if len(ch.run_values) else float("nan")
            rows.append([rank, ch.channel, ch.score, ch.value, med, ch.percentile])
        page.table(
            f"{comp.layer}: the run's most selective channels for {comp.cls}",
            ["rank", "channel", r.score_name, "this image's mean", "run median", "percentile"],
            rows,
        )
