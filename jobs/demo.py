"""Demo: draw a small labeled set of SYNTHETIC cat and dog pictures, extract and report on it, say where the page is.

    python -m jobs.demo [--out runs/demo] [--images-per-class N] [--weights auto|imagenet|random]

The pictures are cartoons drawn here (no download): a cat is an orange face with pointed ears and stripes, a dog
a brown face with drooping ears. The ImageNet weights are used when they are already in the torch hub cache;
otherwise the run uses random weights and the page says in a banner that its results mean nothing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from analysis.config import make_config, read_config_section
from analysis.model.vgg16 import imagenet_weights_path
from analysis.store.contract import INDEX_HTML, REPORT_DIR
from jobs import cli, extract, report, runtime
from jobs.config import DemoConfig, ExtractConfig, ReportConfig

log = logging.getLogger("cnn_blackbox")
NOTE = (
    "SYNTHETIC DEMO DATA: the images are cartoons drawn by `make demo` (orange faces with pointed ears named "
    "cat.N.png, brown faces with drooping ears named dog.N.png), not photographs."
)


def main(cfg: DemoConfig, config_file: str | None = None) -> int:
    out = Path(cfg.out)
    data, run = out / "synthetic-data", out / "run"

    # 1. A small labeled dataset, drawn here and named as synthetic.
    write_synthetic_images(data, cfg.images_per_class)
    weights = pick_weights(cfg.weights)
    log.info("demo: %d synthetic images in %s; weights %s", 2 * cfg.images_per_class, data, weights)

    # 2. Extract, exactly as `make analyze` would run it.
    extract_cfg = make_config(
        ExtractConfig,
        {
            **read_config_section(config_file, "extract"),
            "data": str(data),
            "out": str(run),
            "weights": weights,
            "image_size": cfg.image_size,
            "device": cfg.device,
            "download": False,
            "overwrite": True,
            "progress": False,
        },
    )
    extract.main(extract_cfg)

    # 3. The report, with a banner that says the data is synthetic.
    report_cfg = make_config(
        ReportConfig,
        {
            **read_config_section(config_file, "report"),
            "dataset_issues": read_config_section(config_file, "report_qa"),
            "run": str(run),
            "device": cfg.device,
            "note": NOTE,
            "progress": False,
        },
    )
    report.main(report_cfg)
    log.info("demo done: open %s", (run / REPORT_DIR / INDEX_HTML).resolve())
    return 0


def pick_weights(choice: str) -> str:
    """auto: the ImageNet weights when cached (the demo never downloads), otherwise random."""
    if choice != "auto":
        return choice
    if imagenet_weights_path().is_file():
        return "imagenet"
    log.warning(
        "ImageNet weights are not cached at %s: the demo uses RANDOM weights (its results mean nothing); "
        "run `make analyze` once on a connected machine to cache them",
        imagenet_weights_path(),
    )
    return "random"


def write_synthetic_images(folder: Path, per_class: int, size: int = 256, seed: int = 0) -> list[Path]:
    """cat.N.png and dog.N.png cartoons with random placement, size, colours and background."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(2 * per_class):
        kind = ("cat", "dog")[i % 2]
        # A smooth random field behind the face: on a flat background every cartoon is one blob, and blobs placed
        # alike are near duplicates to a perceptual hash (they are, at 32 x 32 in grey).
        field = rng.integers(60, 230, (4, 4, 3), dtype=np.uint8)
        im = Image.fromarray(field).resize((size, int(size * rng.uniform(0.75, 1.25))), Image.BICUBIC)
        draw = ImageDraw.Draw(im)
        w, h = im.size
        r = int(min(w, h) * rng.uniform(0.18, 0.3))
        cx, cy = int(rng.uniform(r * 1.6, w - r * 1.6)), int(rng.uniform(r * 1.6, h - r * 1.3))
        if kind == "cat":
            fur = (int(rng.integers(200, 250)), int(rng.integers(110, 160)), int(rng.integers(20, 60)))
            for side in (-1, 1):  # pointed ears
                draw.polygon(
                    [(cx + side * r, cy - r // 3), (cx + side * r // 3, cy - r), (cx + side * r, cy - 3 * r // 2)],
                    fill=fur,
                )
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur)
            for k in (-1, 0, 1):  # stripes
                draw.line([(cx + k * r // 3, cy - r), (cx + k * r // 4, cy - r // 3)], fill=(90, 50, 10), width=4)
        else:
            fur = (int(rng.integers(100, 150)), int(rng.integers(60, 90)), int(rng.integers(20, 50)))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur)
            for side in (-1, 1):  # drooping ears
                draw.ellipse([cx + side * r - r // 3, cy - r // 2, cx + side * r + r // 3, cy + r], fill=(70, 40, 20))
            draw.ellipse([cx - r // 4, cy + r // 4, cx + r // 4, cy + r // 2], fill=(20, 20, 20))  # nose
        for side in (-1, 1):  # eyes
            draw.ellipse(
                [cx + side * r // 2 - 5, cy - r // 4 - 5, cx + side * r // 2 + 5, cy - r // 4 + 5], fill=(0, 0, 0)
            )
        path = folder / f"{kind}.{i}.png"
        im.save(path)
        paths.append(path)
    return paths


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
