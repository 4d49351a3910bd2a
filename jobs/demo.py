"""Demo: draw a small labeled set of SYNTHETIC cat and dog pictures, extract and report on it, say where the page is.

    python -m jobs.demo [--out runs/demo] [--images-per-class N] [--weights auto|imagenet|random]

The pictures are cartoons drawn here (no download): a cat is an orange face with pointed ears and stripes, a dog
a brown face with drooping ears. The features are VGG16's ImageNet ones when the weights are already in the torch hub
cache, otherwise random ones; on top of them the demo fits a 2-way cat/dog head to a second set of cartoons (seconds
on the CPU), saves it as a checkpoint and runs the extract with it, so that its answers and drivers mean something.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch
from PIL import Image

from analysis.config import make_config, read_config_section
from analysis.data.preprocessing import make_preprocessing
from analysis.model.fitted_head import FittedHead, compute_channel_means, fit_head, make_pooling_state
from analysis.model.vgg16 import imagenet_weights_path, load_model
from analysis.store.contract import INDEX_HTML, REPORT_DIR
from jobs import cli, extract, report, runtime
from jobs.config import DemoConfig, ExtractConfig, ReportConfig
from jobs.demo_cartoons import write_synthetic_images

CLASSES = ("cat", "dog")  # the head's order
CHECKPOINT = "demo-head.pt"

log = logging.getLogger("cnn_blackbox")
NOTE = (
    "SYNTHETIC DEMO DATA: the images are cartoons drawn by `make demo` (orange faces with pointed ears named "
    "cat.N.png, brown faces with drooping ears named dog.N.png), not photographs."
)


def main(cfg: DemoConfig, config_file: str | None = None) -> int:
    out = Path(cfg.out)
    data, run = out / "synthetic-data", out / "run"
    extract_section = read_config_section(config_file, "extract")

    # 1. A small labeled dataset, drawn here and named as synthetic.
    write_synthetic_images(data, cfg.images_per_class)
    weights = pick_weights(cfg.weights)
    log.info("demo: %d synthetic images in %s; weights %s", 2 * cfg.images_per_class, data, weights)

    # 2. A cat/dog head fitted on top of those features to other cartoons, saved as a checkpoint.
    head = write_fitted_checkpoint(out, weights, cfg, extract_section)
    model_note = (
        f"The model: {'random' if weights == 'random' else 'ImageNet'} VGG16 features with a 2-way head fitted to "
        f"these cartoons by the demo ({head.n_images} other drawn images, training accuracy "
        f"{head.train_accuracy:.0%}), a logistic regression on the channel means of conv5_3's pooled map."
    )
    log.info("demo: %s", model_note)

    # 3. Extract, exactly as `make analyze DATA=... ARGS='--weights FILE --classes cat,dog'` would run it.
    extract_cfg = make_config(
        ExtractConfig,
        {
            **extract_section,
            "data": str(data),
            "out": str(run),
            "weights": str(out / CHECKPOINT),
            "classes": list(CLASSES),
            "classes_file": None,
            "image_size": cfg.image_size,
            "device": cfg.device,
            "download": False,
            "overwrite": True,
            "progress": False,
        },
    )
    extract.main(extract_cfg)

    # 4. The report, with a banner that says the data is synthetic and what the model is.
    report_cfg = make_config(
        ReportConfig,
        {
            **read_config_section(config_file, "report"),
            "dataset_issues": read_config_section(config_file, "report_qa"),
            "concepts": {**read_config_section(config_file, "concepts"), "device": cfg.device},
            "run": str(run),
            "device": cfg.device,
            "note": f"{NOTE} {model_note}",
            "progress": False,
        },
    )
    report.main(report_cfg)
    log.info("demo done: open %s", (run / REPORT_DIR / INDEX_HTML).resolve())
    return 0


def write_fitted_checkpoint(out: Path, weights: str, cfg: DemoConfig, extract_section: dict) -> FittedHead:
    """Fit the head to a second drawn set (another seed: the run's images stay unseen) and write OUT/demo-head.pt,
    a plain state dict that torch.load(weights_only=True) reads."""
    train = write_synthetic_images(out / "training-data", cfg.images_per_class, seed=1)
    class_map = tuple((name, first, last) for name, (first, last) in extract_section["imagenet_classes"].items())
    loaded = load_model(
        weights, classes=None, classes_file=None, class_map=class_map, download=False, seed=extract_section["seed"]
    )
    preprocessing = make_preprocessing(extract_section["preprocess"], cfg.image_size)
    x = torch.stack([preprocessing.transform(Image.open(p).convert("RGB")) for p in train])  # (N, 3, S, S)
    features = torch.cat([compute_channel_means(loaded.model, batch) for batch in x.split(16)])  # (N, 512)
    labels = torch.tensor([CLASSES.index(p.name.split(".")[0]) for p in train])
    head = fit_head(features, labels, len(CLASSES))
    path, tmp = out / CHECKPOINT, out / f"{CHECKPOINT}.tmp"
    torch.save(make_pooling_state(loaded.model, head), tmp)
    os.replace(tmp, path)
    return head


def pick_weights(choice: str) -> str:
    """auto: the ImageNet weights when cached (the demo never downloads), otherwise random."""
    if choice != "auto":
        return choice
    if imagenet_weights_path().is_file():
        return "imagenet"
    log.warning(
        "ImageNet weights are not cached at %s: the demo uses RANDOM VGG16 features under a head "
        "fitted to its cartoons (nothing it finds carries over to photographs); "
        "run `make analyze` once on a connected machine to cache them",
        imagenet_weights_path(),
    )
    return "random"


def parse(argv: list[str] | None = None) -> tuple[DemoConfig, str | None]:
    p = cli.ArgumentParser(prog="python -m jobs.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="folder for the synthetic data and the run (default runs/demo)")
    p.add_argument("--images-per-class", type=int)
    p.add_argument("--image-size", type=int, help="crop size the network sees")
    p.add_argument("--weights", help="auto (imagenet when cached, else random) | imagenet | random")
    cli.add_config_args(p)
    args = p.parse_args(argv)
    flags = dict(out=args.out, images_per_class=args.images_per_class, image_size=args.image_size, weights=args.weights)
    return cli.resolve_config(DemoConfig, "demo", args, flags), args.config


if __name__ == "__main__":
    runtime.setup_logging()
    runtime.keep_freed_memory()
    sys.exit(cli.run_main(parse, lambda parsed: main(*parsed), "demo"))
