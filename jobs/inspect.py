"""Inspect one image: VGG16's answer and its Grad-CAM, then a convolution, feature maps, top channels: one page.

    python -m jobs.inspect --image cat.jpg [--out runs] [--weights imagenet|random|FILE] [--layers conv1_2,conv5_3]
                           [--run RUN] [--kernel random|edge|sobel|blur|sharpen|identity] [--set key=value]

Writes OUT/inspect/<image name>-<8 hex digits of its path's sha256>/index.html (one folder per image file, so that
2.jpg of Cat/ and 2.jpg of Dog/ keep a page each) with its PNG figures and inspect.json (every number shown).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from analysis.config import ConfigError, read_config_section
from analysis.data.decoding import Decoded, DecodeError, decode_image
from analysis.data.names import make_display
from analysis.data.preprocessing import make_preprocessing
from analysis.data.sources import ImageRecord, SourceError, read_bytes
from analysis.model.attribution import GRADCAM_LAYER, Attributor
from analysis.model.choice import load_chosen_model
from analysis.model.featuremaps import FeatureMapRecorder
from analysis.model.heads import compute_class_logits
from analysis.stats.run_channels import compare_with_run, describe_mismatch
from analysis.store import tables
from analysis.store.run import DATASET_RUN, read_finished_run
from analysis.walkthrough.convolution import compute_convolution, make_kernel
from analysis.walkthrough.inspection import compute_answer, summarize_layer
from jobs import cli, runtime
from jobs.config import InspectConfig
from reports.inspect import maps as inspect_maps
from reports.inspect import page as inspect_page
from reports.inspect.html import Page, render_page

log = logging.getLogger("cnn_blackbox")
# Keys that must agree with the extract job, so they are read from its section unless the inspect section sets them.
SHARED_WITH_EXTRACT = ("max_image_pixels", "max_file_bytes", "imagenet_classes")


def main(cfg: InspectConfig) -> int:
    t0 = time.perf_counter()
    page_dir = Path(cfg.out or "runs") / "inspect" / make_page_name(cfg.image)
    if cfg.run:
        cli.check_utf8_path("RUN", cfg.run)
    # A wrong RUN fails before any work. Its run.json as it is: the page says per layer what it cannot compare.
    run = read_finished_run(cfg.run, strict=False, what=DATASET_RUN) if cfg.run else None

    # The image as read (orientation fixed), and as the network sees it (resized, center-cropped).
    decoded = read_image(cfg.image, cfg.max_file_bytes, cfg.max_image_pixels)
    preprocessing = make_preprocessing(cfg.preprocess, cfg.image_size)
    view = np.asarray(preprocessing.view(decoded.image))  # (N, N, 3) uint8

    # One convolution on its own, on that crop.
    kernel = make_kernel(cfg.kernel, cfg.kernel_seed)
    conv = compute_convolution(view, kernel)  # (3, N, N)

    # VGG16's answer, recording the chosen layers' feature maps on the way. One image on the CPU in fp32: moving
    # the 0.5 GB model to a GPU would cost more than this forward, and fp32 keeps the numbers shown exact.
    loaded = load_chosen_model(cfg, download=cfg.download)
    if loaded.random:
        log.warning("RANDOM WEIGHTS (seed %d): the answer and the channels mean nothing", cfg.seed)
    x = preprocessing.transform(decoded.image)[None]  # (1, 3, N, N)
    attributed = list(dict.fromkeys([*cfg.layers, GRADCAM_LAYER]))
    model = loaded.model.requires_grad_(False)
    with torch.no_grad(), FeatureMapRecorder(model, cfg.layers) as recorder, Attributor(model, attributed) as att:
        raw = att.forward(x)  # (1, 1000 or K)
        maps = recorder.take()  # layer -> (1, C, h, w)
        with torch.enable_grad():
            logits = compute_class_logits(raw.float(), loaded)  # (1, K), in the graph
        contrib, cams = att.take_both(logits)  # layer -> (1, K, C), layer -> (1, K, h, w)
    answer = compute_answer(raw.detach(), loaded)
    gradcams = {cls: cams[GRADCAM_LAYER][0, k].numpy() for k, cls in enumerate(answer.classes)}

    # Each layer: its feature maps, the mean of each channel, the channel with the highest mean, and each
    # channel's contribution to the answer (gradient x activation): the channel the classifier leaned on.
    layers = [summarize_layer(name, maps[name][0], contrib[name][0, answer.pred]) for name in cfg.layers]

    # With a dataset run: the channels it ranked most selective for the predicted class, and this image among it.
    predicted = answer.classes[answer.pred]
    comparisons = (
        [compare_with_run(run, lm.layer, lm.means, predicted, cfg.run_channels) for lm in layers] if run else []
    )

    # The page: its figures, its numbers, and index.html last, so that it only ever references files that exist.
    # The answer first, with where its evidence lies (Grad-CAM); then the walkthrough in the order computed above:
    # the image, one convolution, each layer, logits to answer; the run's channels; the raw numbers. The page
    # numbers its sections in the order they are added here.
    name = make_display(Path(cfg.image).name)  # a name that is not UTF-8 is shown with \xHH escapes
    page = inspect_page.start_page(name, make_display(cfg.image), loaded, preprocessing.describe()["steps"], cfg.layers)
    backdrop = inspect_maps.Backdrop(view, cfg.colormap, cfg.alpha)
    inspect_page.add_answer_section(page, answer)
    inspect_maps.add_gradcam_section(page, gradcams, backdrop, answer)
    inspect_page.add_image_section(
        page,
        np.asarray(fit_within(decoded, inspect_page.SHOWN_MAX_SIDE)),
        decoded.width,
        decoded.height,
        decoded.format,
        view,
        preprocessing.describe()["steps"],
    )
    inspect_page.add_conv_section(page, kernel, conv)
    for lm in layers:
        inspect_maps.add_layer_section(page, lm, backdrop, cfg.grid_channels, answer.classes[answer.pred])
    inspect_page.add_softmax_section(page, answer)
    if run:
        notes = describe_mismatch(run.meta, loaded.weights_id, preprocessing.describe())
        inspect_maps.add_run_section(
            page, make_display(cfg.run), notes, comparisons, {lm.layer: lm for lm in layers}, backdrop
        )
    inspect_page.add_numbers_section(
        page, inspect_page.make_numbers(name, answer, layers, kernel, conv, comparisons, page.facts)
    )
    write_page(page_dir, page)
    log.info(
        "%s: %s (%.3f); page written in %.1f s: %s",
        name,
        predicted,
        float(answer.probs[answer.pred]),
        time.perf_counter() - t0,
        make_display((page_dir / "index.html").resolve()),
    )
    return 0


def make_page_name(image: str) -> str:
    """The folder name of an image's page: its file name, with anything but letters, digits, '.', '-' made '_', then
    8 hex digits of the sha256 of its resolved path.

    So two images of one name in two folders (PetImages/Cat/2.jpg, PetImages/Dog/2.jpg) never share, and overwrite,
    a page, nor do two names made alike (dog.\xff.jpg and dog.\xfe.jpg, caf\u00e9 and its NFD twin, a?b and a*b);
    the same file inspected again replaces its own page. A long name is cut so that the folder's name stays within
    the file system's 255 bytes.
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(image).name).lstrip(".")[:200] or "image"
    return f"{name}-{hashlib.sha256(os.fsencode(os.path.realpath(image))).hexdigest()[:8]}"


def read_image(path: str, max_bytes: int, max_pixels: int) -> Decoded:
    """The decoded image, or one line that names the file and says what is wrong with it."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"image {path!r}: no such file")
    if not p.is_file():
        raise ConfigError(f"image {path!r}: not a file")
    try:
        data = read_bytes(ImageRecord(p.name, None, None, str(p.resolve())), max_bytes)
        return decode_image(data, max_pixels)
    except (SourceError, DecodeError) as e:
        raise DecodeError(f"image {path!r} cannot be used: {e.reason}") from None


def fit_within(decoded: Decoded, side: int):
    """The image scaled down so that its longer side is at most `side` (never up)."""
    image = decoded.image
    if max(image.size) <= side:
        return image
    scale = side / max(image.size)
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )


def write_page(page_dir: Path, page: Page) -> None:
    """Every carried file atomically, then index.html; figures of an earlier page that this one dropped go."""
    for file_name, data in page.files.items():
        tables.write_bytes_atomic(data, page_dir / file_name)
    tables.write_bytes_atomic(render_page(page).encode("utf-8"), page_dir / "index.html")
    for stale in page_dir.glob("*.png"):
        if stale.name not in page.files:
            stale.unlink()


def parse(argv: list[str] | None = None) -> InspectConfig:
    p = cli.ArgumentParser(prog="python -m jobs.inspect", description=__doc__.splitlines()[0])
    p.add_argument("--image", help="the image to inspect (any format PIL reads; EXIF orientation is applied)")
    p.add_argument("--out", help="the page goes to OUT/inspect/<image name>-<8 hex>/index.html (default runs/)")
    p.add_argument("--run", help="a finished dataset run (the OUT of make analyze): adds its most selective channels")
    p.add_argument("--weights", help="imagenet | random | path to a checkpoint (.pth, .pt, .safetensors)")
    p.add_argument("--classes", help="comma-separated class names of an N-way checkpoint, in head order")
    p.add_argument("--classes-file", help="class names, one a line (e.g. classification-pytorch's cls_classes.txt)")
    p.add_argument("--preprocess", help="imagenet | classification-pytorch")
    p.add_argument("--image-size", type=int, help="crop size the network sees (resize scales with it)")
    p.add_argument("--layers", help="all, or comma-separated layer names (conv1_1 ... conv5_3)")
    p.add_argument(
        "--kernel", help="the single-convolution demo's kernel: random | edge | sobel | blur | sharpen | identity"
    )
    cli.add_config_args(p)
    args = p.parse_args(argv)
    own = read_config_section(args.config, "inspect")
    shared = {
        k: v
        for k, v in read_config_section(args.config, "extract").items()
        if k in SHARED_WITH_EXTRACT and k not in own
    }
    flags = dict(
        shared,
        image=args.image,
        out=args.out,
        run=args.run,
        weights=args.weights,
        classes=args.classes,
        classes_file=args.classes_file,
        preprocess=args.preprocess,
        image_size=args.image_size,
        layers=args.layers,
        kernel=args.kernel,
    )
    cfg = cli.resolve_config(InspectConfig, "inspect", args, flags)
    if not cfg.image:
        raise ConfigError("image: no image given; pass --image PATH (make inspect IMAGE=PATH)")
    return cfg


if __name__ == "__main__":
    runtime.setup_logging()
    sys.exit(cli.run_main(parse, main, "inspect"))
