"""The inspect walkthrough as a Page: each section turns the numbers of one step into figures, tables and captions.

The answer first: the predicted class and its probabilities (here), then where the evidence of each class lies
(Grad-CAM, reports/inspect/maps.py). Then the walkthrough of the article: the image and one convolution (here), one
section per layer (maps.py), from the last layer to the answer (logits, softmax; here), the channels a dataset run
ranked most selective (maps.py), and the raw numbers (here). jobs/inspect.py adds them in that order; the page
numbers its sections by the order they are added (reports/inspect/html.py), so no title carries a number.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from analysis.model.vgg16 import LoadedModel
from analysis.stats.run_channels import RunComparison
from analysis.walkthrough.convolution import Kernel, compute_display_range, compute_display_rgb
from analysis.walkthrough.inspection import Answer, LayerMaps
from reports.banners import make_unverified_weights
from reports.encode import encode_png
from reports.inspect import figures as figs
from reports.inspect.html import Page

SHOWN_MAX_SIDE = 1024  # the image as read is shown at most this large; the page need not carry a 12 MP PNG
OTHERS_SHOWN = 4  # the answer's line names the predicted class and this many others, most probable first


def start_page(name: str, path: str, loaded: LoadedModel, steps: str, layers: Sequence[str]) -> Page:
    """The page's title, what produced it, and a banner when the weights are random or not what their id says."""
    page = Page(f"Inspect: {name}", "VGG16, one image, step by step")
    if loaded.random:
        page.banner = f"Random weights ({loaded.weights_id}): a smoke run. The answer and the channels mean nothing."
    unverified = loaded.weights_verified is False
    if unverified:
        page.banner = make_unverified_weights(loaded.weights_path, loaded.weights_id)
    page.facts = [
        ("image", str(path)),
        ("weights", loaded.weights_id + (" (unverified: its sha256 does not match its name)" if unverified else "")),
        ("head", loaded.head),
        ("preprocessing", steps),
        ("layers", ", ".join(layers)),
        ("device", "cpu, fp32"),
    ]
    if loaded.class_map:
        page.facts.append(("ImageNet classes folded", ", ".join(f"{c}: {lo}-{hi}" for c, lo, hi in loaded.class_map)))
    return page


def add_image_section(
    page: Page, image: np.ndarray, width: int, height: int, fmt: str | None, view: np.ndarray, steps: str
) -> None:
    """The image as read and as the network sees it. image: (H, W, 3) uint8, already at most SHOWN_MAX_SIDE."""
    page.section("image", "The image")
    h, w = image.shape[:2]
    shown = "" if (w, h) == (width, height) else f", shown at {w}x{h}"
    page.figure(
        "image.png",
        encode_png(image),
        f"The image as read: {fmt or 'unknown format'}, stored {width}x{height}, EXIF orientation applied, "
        f"converted to RGB{shown}.",
    )
    page.figure(
        "view.png",
        encode_png(view),
        f"As the network sees it ({view.shape[1]}x{view.shape[0]}): {steps}. Normalization is not shown; "
        "every map on this page (Grad-CAM included) is aligned with this crop.",
    )


def add_conv_section(page: Page, kernel: Kernel, output: np.ndarray) -> None:
    """One Conv2d(3, 3, 3, stride 1, padding 1) on the crop. output: (3, N, N) float32."""
    page.section("convolution", "One convolution")
    page.text(
        "Before VGG16's 13 convolution layers, one on its own: Conv2d(3 in, 3 out, kernel 3x3, stride 1, "
        f"padding 1) applied to the crop above, scaled to [0, 1]. Kernel: {kernel.name}, {kernel.description}."
    )
    lo, hi = compute_display_range(output)
    page.figure(
        "conv_rgb.png",
        encode_png(compute_display_rgb(output)),
        f"The 3 output channels shown as one RGB picture (red = channel 0, green = 1, blue = 2): values "
        f"from {lo:.4g} to {hi:.4g}, over all three channels, mapped linearly to 0..255.",
    )
    page.figure(
        "conv_channels.png",
        encode_png(figs.make_conv_channels_figure(output, kernel.channels)),
        "Each output channel on its own, with its own grey scale (raw values on the bar). Zero padding "
        "makes the image border an edge too.",
    )
    rows = []
    for o in range(3):
        for i, colour in enumerate(("red", "green", "blue")):
            rows.append(
                [
                    f"out {o} ({kernel.channels[o]})",
                    f"in {colour}",
                    *(" ".join(f"{v:+.3f}" for v in kernel.weight[o, i, r]) for r in range(3)),
                    float(kernel.bias[o]) if i == 0 else "",
                ]
            )
    page.table(
        "The kernel: weight[out, in] row by row, and each output's bias",
        ["output", "input", "row 1", "row 2", "row 3", "bias"],
        rows,
    )


def add_answer_section(page: Page, answer: Answer) -> None:
    """The answer, first on the page: the predicted class and the probabilities, in one line (the most probable
    OTHERS_SHOWN of the other classes; the table of every class is in the softmax section)."""
    pred = answer.classes[answer.pred]
    page.section("answer", f"The answer: {pred}")
    others = [k for k in np.argsort(-answer.probs, kind="stable") if k != answer.pred]
    listed = ", ".join(f"{answer.classes[k]} {float(answer.probs[k]):.4f}" for k in others[:OTHERS_SHOWN])
    more = f" and {len(others) - OTHERS_SHOWN} more" if len(others) > OTHERS_SHOWN else ""
    page.text(
        f"VGG16 says {pred}, with probability {float(answer.probs[answer.pred]):.4f}"
        + (f" ({listed}{more})" if others else "")
        + ". Below: where in the image the evidence for each class lies; then the walkthrough, from the image to "
        "this answer."
    )


def add_softmax_section(page: Page, answer: Answer) -> None:
    """The walkthrough's last step: logits -> softmax -> predicted class (and the ImageNet top-5)."""
    pred = answer.classes[answer.pred]
    page.section("softmax", "From the last layer to the answer: logits and softmax")
    page.text(
        "After the last convolution, VGG16 pools the maps and three fully connected layers turn them into one "
        "logit z_k per class. The probabilities of the answer at the top are the softmax of the logits: "
        "p_k = exp(z_k) / sum_j exp(z_j)."
    )
    page.table(
        "Logits and probabilities",
        ["class", "logit", "softmax probability"],
        [[c, float(z), float(p)] for c, z, p in zip(answer.classes, answer.logits, answer.probs)],
    )
    page.figure(
        "probabilities.png",
        encode_png(figs.make_probability_figure(answer.classes, answer.probs, answer.logits)),
        f"Softmax probability of each class; the predicted class ({pred}) is red.",
    )
    if answer.imagenet_top:
        page.text(
            "The ImageNet head has 1000 classes; each class above is the logsumexp of the logits of its "
            "ImageNet index range. The five most probable ImageNet classes (softmax over all 1000):"
        )
        page.table(
            "ImageNet top-5",
            ["index", "ImageNet class", "probability"],
            [[i, name, p] for i, name, p in answer.imagenet_top],
        )


def add_numbers_section(page: Page, numbers: dict[str, Any]) -> None:
    page.section("numbers", "Raw numbers")
    page.attach("inspect.json", (json.dumps(numbers, indent=1) + "\n").encode())
    page.link(
        "inspect.json: every number on this page (logits, probabilities, channel means, kernel, run percentiles)",
        "inspect.json",
    )


def make_numbers(
    name: str,
    answer: Answer,
    layers: Sequence[LayerMaps],
    kernel: Kernel,
    output: np.ndarray,
    comparisons: Sequence[RunComparison],
    facts: Sequence[tuple[str, str]],
) -> dict[str, Any]:
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
        "kernel": {
            "name": kernel.name,
            "weight": kernel.weight.tolist(),
            "bias": kernel.bias.tolist(),
            "display_range": [lo, hi],
        },
        "layers": {
            lm.layer: {
                "shape": list(lm.maps.shape),
                "means": [float(v) for v in lm.means],
                "top_channel": lm.top,
                "contributions": None if lm.contrib is None else [float(v) for v in lm.contrib],
                "top_contribution_channel": lm.top_contrib,
            }
            for lm in layers
        },
        "run": [
            {
                "layer": c.layer,
                "class": c.cls,
                "reason": c.reason,
                "score": c.ranking.score_name if c.ranking else None,
                "channels": [
                    {
                        "channel": ch.channel,
                        "score": ch.score,
                        "value": ch.value,
                        "percentile": ch.percentile,
                        "vmax": ch.vmax,
                    }
                    for ch in c.channels
                ],
            }
            for c in comparisons
        ],
    }
