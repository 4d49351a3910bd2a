"""The inspect walkthrough as a Page: each section turns the numbers of one step into figures, tables and captions.

Sections follow the walkthrough: 1 the image, 2 one convolution, 3 the answer, 4-5 one part per layer (feature
maps, channel means, the top channel over the image), 6 the channels a dataset run ranked most selective.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from analysis.model.attribution import GRADCAM_LAYER
from analysis.model.vgg16 import LoadedModel
from analysis.stats.run_channels import RunComparison
from analysis.walkthrough.convolution import Kernel, compute_display_range, compute_display_rgb
from analysis.walkthrough.inspection import Answer, LayerMaps
from reports.banners import make_unverified_weights
from reports.encode import encode_png
from reports.inspect import figures as figs
from reports.inspect.html import Page
from reports.overlays import make_overlay

SHOWN_MAX_SIDE = 1024  # the image as read is shown at most this large; the page need not carry a 12 MP PNG


def start_page(name: str, path: str, loaded: LoadedModel, steps: str, layers: Sequence[str]) -> Page:
    """The page's title, what produced it, and a banner when the weights are random or not what their id says."""
    page = Page(f"Inspect: {name}", "VGG16, one image, step by step")
    if loaded.random:
        page.banner = f"Random weights ({loaded.weights_id}): a smoke run. The answer and the channels mean nothing."
    unverified = loaded.weights_verified is False
    if unverified:
        page.banner = make_unverified_weights(loaded.weights_path, loaded.weights_id)
    page.facts = [("image", str(path)),
                  ("weights", loaded.weights_id + (" (unverified: its sha256 does not match its name)" if unverified
                                                   else "")), ("head", loaded.head),
                  ("preprocessing", steps), ("layers", ", ".join(layers)), ("device", "cpu, fp32")]
    if loaded.class_map:
        page.facts.append(("ImageNet classes folded",
                           ", ".join(f"{c}: {lo}-{hi}" for c, lo, hi in loaded.class_map)))
    return page


def add_image_section(page: Page, image: np.ndarray, width: int, height: int, fmt: str | None, view: np.ndarray,
                      steps: str) -> None:
    """1. The image as read and as the network sees it. image: (H, W, 3) uint8, already at most SHOWN_MAX_SIDE."""
    page.section("image", "1. The image")
    h, w = image.shape[:2]
    shown = "" if (w, h) == (width, height) else f", shown at {w}x{h}"
    page.figure("image.png", encode_png(image),
                f"The image as read: {fmt or 'unknown format'}, stored {width}x{height}, EXIF orientation applied, "
                f"converted to RGB{shown}.")
    page.figure("view.png", encode_png(view),
                f"As the network sees it ({view.shape[1]}x{view.shape[0]}): {steps}. Normalization is not shown; "
                "every later picture is aligned with this crop.")


def add_conv_section(page: Page, kernel: Kernel, output: np.ndarray) -> None:
    """2. One Conv2d(3, 3, 3, stride 1, padding 1) on the crop. output: (3, N, N) float32."""
    page.section("convolution", "2. One convolution")
    page.text("Before VGG16's 13 convolution layers, one on its own: Conv2d(3 in, 3 out, kernel 3x3, stride 1, "
              f"padding 1) applied to the crop above, scaled to [0, 1]. Kernel: {kernel.name}, {kernel.description}.")
    lo, hi = compute_display_range(output)
    page.figure("conv_rgb.png", encode_png(compute_display_rgb(output)),
                f"The 3 output channels shown as one RGB picture (red = channel 0, green = 1, blue = 2): values "
                f"from {lo:.4g} to {hi:.4g}, over all three channels, mapped linearly to 0..255.")
    page.figure("conv_channels.png", encode_png(figs.make_conv_channels_figure(output, kernel.channels)),
                "Each output channel on its own, with its own grey scale (raw values on the bar). Zero padding "
                "makes the image border an edge too.")
    rows = []
    for o in range(3):
        for i, colour in enumerate(("red", "green", "blue")):
            rows.append([f"out {o} ({kernel.channels[o]})", f"in {colour}",
                         *(" ".join(f"{v:+.3f}" for v in kernel.weight[o, i, r]) for r in range(3)),
                         float(kernel.bias[o]) if i == 0 else ""])
    page.table("The kernel: weight[out, in] row by row, and each output's bias", ["output", "input", "row 1",
               "row 2", "row 3", "bias"], rows)


def add_answer_section(page: Page, answer: Answer) -> None:
    """3. Logits -> softmax -> predicted class (and ImageNet top-5)."""
    page.section("answer", "3. VGG16's answer")
    pred = answer.classes[answer.pred]
    page.text(f"Predicted class: {pred}, probability {float(answer.probs[answer.pred]):.4f}. The probabilities are "
              "the softmax of the logits: p_k = exp(z_k) / sum_j exp(z_j).")
    page.table("Logits and probabilities", ["class", "logit", "softmax probability"],
               [[c, float(z), float(p)] for c, z, p in zip(answer.classes, answer.logits, answer.probs)])
    page.figure("probabilities.png",
                encode_png(figs.make_probability_figure(answer.classes, answer.probs, answer.logits)),
                f"Softmax probability of each class; the predicted class ({pred}) is red.")
    if answer.imagenet_top:
        page.text("The ImageNet head has 1000 classes; each class above is the logsumexp of the logits of its "
                  "ImageNet index range. The five most probable ImageNet classes (softmax over all 1000):")
        page.table("ImageNet top-5", ["index", "ImageNet class", "probability"],
                   [[i, name, p] for i, name, p in answer.imagenet_top])


def add_layer_section(page: Page, lm: LayerMaps, view: np.ndarray, max_tiles: int, cmap: str, alpha: float,
                      cls: str) -> None:
    """4-5. One layer: its feature maps, its channel means, the top channel over the image, and which channels the
    answer (`cls`) leaned on."""
    c, h, w = lm.maps.shape
    page.section(f"layer-{lm.layer}", f"4-5. {lm.layer}")
    page.figure(f"features_{lm.layer}.png",
                encode_png(figs.make_feature_grid_figure(lm.maps, lm.means, lm.layer, max_tiles)),
                f"Feature maps of {lm.layer} ({c} channels of {h}x{w}, after ReLU): the {min(c, max_tiles)} channels "
                "with the highest mean first, each labelled with its index and mean; one colour scale for the grid.")
    page.figure(f"means_{lm.layer}.png", encode_png(figs.make_means_figure(lm.means, lm.layer, lm.top)),
                f"Mean activation of each of the {c} channels of {lm.layer}; the highest, channel {lm.top} "
                f"({float(lm.means[lm.top]):.4g}), is red.")
    fmap = lm.maps[lm.top]
    vmax = max(float(fmap.max()), 1e-12)
    overlay = make_overlay(view, fmap, 0.0, vmax, cmap, alpha)
    page.figure(f"overlay_{lm.layer}.png", encode_png(
        figs.make_overlay_figure(view, fmap, overlay, 0.0, vmax, cmap,
                                 f"{lm.layer} channel {lm.top}, the highest mean")),
        f"Channel {lm.top} of {lm.layer} over the crop: its {h}x{w} map upsampled bilinearly to "
        f"{view.shape[1]}x{view.shape[0]}, coloured with {cmap} from 0 to its maximum here ({vmax:.4g}) and blended "
        f"at alpha {alpha}.")
    if lm.contrib is not None:
        top = lm.top_contrib
        page.figure(f"contrib_{lm.layer}.png", encode_png(figs.make_contribution_figure(lm.contrib, lm.layer,
                                                                                          lm.top, cls)),
                    f"Each channel's contribution to the logit of {cls}, the answer: the sum over the map of the "
                    f"activation times the logit's gradient (gradient x activation). The article's channel, the one "
                    f"with the highest mean, is c{lm.top} ({float(lm.contrib[lm.top]):.4g}); the channel the "
                    f"classifier leaned on most is c{top} ({float(lm.contrib[top]):.4g}).")


def add_gradcam_section(page: Page, gradcams: dict[str, np.ndarray], view: np.ndarray, cmap: str, alpha: float,
                        answer: Answer) -> None:
    """Where in the image the evidence for each class lies: Grad-CAM at the last conv layer."""
    page.section("gradcam", f"Where the evidence lies: Grad-CAM at {GRADCAM_LAYER}")
    vmaxes = {cls: float(cam.max()) for cls, cam in gradcams.items()}
    overlays = {cls: make_overlay(view, cam, 0.0, max(vmaxes[cls], 1e-12), cmap, alpha)
                for cls, cam in gradcams.items()}
    page.figure("gradcam.png", encode_png(figs.make_gradcam_figure(view, overlays, vmaxes)),
                f"Grad-CAM (Selvaraju et al. 2017) of each class: ReLU of the {GRADCAM_LAYER} maps weighted by the "
                "mean gradient of the class logit, upsampled onto the crop; each map on its own colour scale "
                f"({cmap}, 0 to its maximum, stated above it). The answer is {answer.classes[answer.pred]}.")


def add_run_section(page: Page, run: str, notes: Sequence[str], comparisons: Sequence[RunComparison],
                    maps: dict[str, LayerMaps], view: np.ndarray, cmap: str, alpha: float) -> None:
    """6. The channels the dataset run ranked most selective for the predicted class, and where this image falls."""
    page.section("run", "6. What the dataset run says")
    page.text(f"Run: {run}. For each layer, the channels that run ranked most selective for the predicted class, "
              "over this image, and where this image's mean of each falls among the run's images.")
    for note in notes:
        page.note(f"Caution: {note}.")
    for comp in comparisons:
        page.heading(f"{comp.layer}: channels selective for {comp.cls}")
        if comp.ranking is None:
            page.note(f"No ranking for {comp.layer}: {comp.reason}.")
            continue
        r = comp.ranking
        page.text(f"Ranked by {r.score_name} of the class against the rest, grouping images by {r.group_by}; "
                  f"source: {r.source}.")
        rows = []
        for rank, ch in enumerate(comp.channels, 1):
            fmap = maps[comp.layer].maps[ch.channel]
            overlay = make_overlay(view, fmap, 0.0, ch.vmax, cmap, alpha)
            fig = figs.make_run_channel_figure(
                overlay, ch.run_values, ch.value, ch.percentile,
                f"{comp.layer} channel {ch.channel}: rank {rank} for {comp.cls} ({r.score_name} {ch.score:.3f})",
                f"channel {ch.channel} mean over the run's {len(ch.run_values)} images")
            page.figure(f"run_{comp.layer}_c{ch.channel}.png", encode_png(fig),
                        f"Left: channel {ch.channel} over the crop, coloured from 0 to {ch.vmax:.4g} (the 99th "
                        "percentile of its maximum over the run, so a weak response looks weak). Right: the run's "
                        f"distribution of its mean; this image's mean {ch.value:.4g} is at percentile "
                        f"{ch.percentile:.1f}.", alt=f"{comp.layer} channel {ch.channel} over the image, and the "
                        "run's distribution of its mean")
            med = float(np.median(ch.run_values)) if len(ch.run_values) else float("nan")
            rows.append([rank, ch.channel, ch.score, ch.value, med, ch.percentile])
        page.table(f"{comp.layer}: the run's most selective channels for {comp.cls}",
                   ["rank", "channel", r.score_name, "this image's mean", "run median", "percentile"], rows)


def add_numbers_section(page: Page, numbers: dict[str, Any]) -> None:
    page.section("numbers", "Raw numbers")
    page.attach("inspect.json", (json.dumps(numbers, indent=1) + "\n").encode())
    page.link("inspect.json: every number on this page (logits, probabilities, channel means, kernel, run "
              "percentiles)", "inspect.json")


def make_numbers(name: str, answer: Answer, layers: Sequence[LayerMaps], kernel: Kernel, output: np.ndarray,
                 comparisons: Sequence[RunComparison], facts: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Every number the page shows, for inspect.json (raw numbers next to the pictures)."""
    lo, hi = compute_display_range(output)
    return {
        "image": name,
        "facts": dict(facts),
        "classes": list(answer.classes),
        "logits": [float(v) for v in answer.logits],
        "probabilities": [float(v) for v in answer.probs],
        "predicted": answer.classes[answer.pred],
        "imagenet_top5": [list(t) for t in answer.imagenet_top] if answer.imagenet_top else None,
        "kernel": {"name": kernel.name, "weight": kernel.weight.tolist(), "bias": kernel.bias.tolist(),
                   "display_range": [lo, hi]},
        "layers": {lm.layer: {"shape": list(lm.maps.shape), "means": [float(v) for v in lm.means],
                              "top_channel": lm.top,
                              "contributions": None if lm.contrib is None else [float(v) for v in lm.contrib],
                              "top_contribution_channel": lm.top_contrib} for lm in layers},
        "run": [{"layer": c.layer, "class": c.cls, "reason": c.reason,
                 "score": c.ranking.score_name if c.ranking else None,
                 "channels": [{"channel": ch.channel, "score": ch.score, "value": ch.value,
                               "percentile": ch.percentile, "vmax": ch.vmax} for ch in c.channels]}
                for c in comparisons],
    }
