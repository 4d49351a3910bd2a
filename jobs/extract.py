"""Extract: VGG16 over a whole dataset -> per-image predictions and per-channel activations in Parquet.

    python -m jobs.extract --data ./dogs-vs-cats [--out runs/x] [--weights imagenet|random|FILE] [--set key=value]
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from analysis import storage
from analysis.config import ConfigError, ExtractConfig
from analysis.dataset import ImageDataset, collate_images
from analysis.discovery import apply_labels, find_images, read_labels_csv
from analysis.heads import compute_class_logits, compute_probabilities
from analysis.activations import ChannelReducer
from analysis.model import layer_channels, load_model
from analysis.preprocessing import make_preprocessing
from analysis.predictions import make_prediction_rows
from analysis.writer import UnitWriter
from jobs import cli, outputs, runtime

log = logging.getLogger("cnn_blackbox")


def main(cfg: ExtractConfig) -> int:
    t0 = time.perf_counter()
    out = outputs.resolve_out(cfg.data, cfg.out)
    outputs.prepare_out(out, cfg.overwrite)

    # 1. Find the images (names only: nothing is decoded yet).
    found = find_images(cfg.data)
    if cfg.labels:
        found, unmatched = apply_labels(found, read_labels_csv(cfg.labels))
        if unmatched:
            log.warning("%d image ids in %s match no image found", unmatched, cfg.labels)
    log.info("DATA %s: %s; %d images, %d other files skipped %s", found.root, found.layout, found.n_images,
             sum(found.skipped.values()), dict(found.skipped) or "")

    # 2. The model and its weights, before any image is read.
    device = runtime.pick_device(cfg.device)
    precision = runtime.pick_precision(cfg.precision, device)
    loaded = load_model(cfg.weights, classes=cfg.classes, classes_file=cfg.classes_file,
                        class_map=cfg.imagenet_classes, download=cfg.download, seed=cfg.seed)
    if loaded.random:
        log.warning("RANDOM WEIGHTS (seed %d): a smoke run; these activations and predictions mean nothing", cfg.seed)
    outputs.warn_unknown_labels(found.records, loaded.classes)
    model = loaded.model.to(device, memory_format=torch.channels_last)
    channels = {name: layer_channels(model)[name] for name in cfg.layers}
    preprocessing = make_preprocessing(cfg.preprocess, cfg.image_size)

    # 3. Stream the dataset through the model, reducing every layer inside its hook.
    workers = runtime.pick_workers(cfg.workers, device)
    loader = torch.utils.data.DataLoader(
        ImageDataset(found.records, preprocessing, cfg.max_image_pixels, cfg.max_file_bytes),
        batch_size=cfg.batch_size, shuffle=False, num_workers=workers, collate_fn=collate_images,
        pin_memory=device.type == "cuda", persistent_workers=False, prefetch_factor=4 if workers else None)
    meta = outputs.make_metadata(cfg, found, loaded, channels, preprocessing, device, precision, workers)
    outputs.write_config(out, cfg)
    writer = UnitWriter(out, loaded.classes, loaded.head == "imagenet", channels, cfg.unit_size, meta)
    counts = {"ok": 0, "error": 0}
    imagenet_head = loaded.head == "imagenet"
    t_loop = time.perf_counter()
    bar = tqdm(total=found.n_images, unit="img", disable=not cfg.progress, dynamic_ncols=True, file=sys.stderr)
    with torch.inference_mode(), ChannelReducer(model, cfg.layers) as reducer:
        for batch in loader:
            k = len(loaded.classes)
            host = np.zeros((0, 2 * sum(channels.values()) + 2 * k), np.float32)
            top1 = np.zeros(0, np.int64) if imagenet_head else None
            if len(batch.images):
                x = batch.images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                with runtime.autocast(device, precision):
                    raw = model(x)                                  # (B_ok, 1000 or K)
                reduced = reducer.take()                            # layer -> ((B_ok, C) mean, (B_ok, C) max)
                logits = compute_class_logits(raw.float(), loaded)  # (B_ok, K)
                # One device-to-host copy per batch: [means of every layer, maxima of every layer, logits, probs]
                host = torch.cat([reduced[n][0] for n in channels] + [reduced[n][1] for n in channels]
                                 + [logits, compute_probabilities(logits)], dim=1).cpu().numpy()
                if imagenet_head:
                    top1 = raw.argmax(dim=1).cpu().numpy()
            acts, class_logits, probs = host[:, :-2 * k], host[:, -2 * k:-k], host[:, -k:]
            rows = make_prediction_rows(found.records, batch.indices, batch.ok, batch.errors, batch.widths,
                                        batch.heights, batch.formats, loaded.classes, class_logits, probs,
                                        top1, loaded.imagenet_categories)
            writer.add(rows, batch.ok, acts)
            counts["ok"] += sum(batch.ok)
            counts["error"] += len(batch.ok) - sum(batch.ok)
            bar.update(len(batch.indices))
    bar.close()
    writer.close()
    seconds = time.perf_counter() - t_loop

    # 4. run.json last: its presence says the run is complete.
    summary = outputs.write_run_json(out, meta, found, counts, writer, t0, seconds)
    outputs.log_summary(out, summary)
    return 0


def parse(argv: list[str] | None = None) -> ExtractConfig:
    p = cli.ArgumentParser(prog="python -m jobs.extract", description=__doc__.splitlines()[0])
    p.add_argument("--data", help="a folder, a .zip, or a parent folder holding several")
    p.add_argument("--out", help="output folder (default runs/<name of DATA>)")
    p.add_argument("--weights", help="imagenet | random | path to a checkpoint (.pth, .pt, .safetensors)")
    p.add_argument("--labels", metavar="CSV", help="image_id,label CSV that overrides the labels found")
    p.add_argument("--classes", help="comma-separated class names of an N-way checkpoint, in head order")
    p.add_argument("--classes-file", help="class names, one a line (e.g. classification-pytorch's cls_classes.txt)")
    p.add_argument("--preprocess", help="imagenet | classification-pytorch")
    p.add_argument("--image-size", type=int, help="crop size the network sees (resize scales with it)")
    p.add_argument("--layers", help="all, or comma-separated layer names (conv1_1 ... conv5_3)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", help="DataLoader worker processes, or auto")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in OUT")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    cli.add_config_args(p)
    args = p.parse_args(argv)
    workers = args.workers if args.workers in (None, "auto") else cli.parse_int("--workers", args.workers)
    flags = dict(data=args.data, out=args.out, weights=args.weights, labels=args.labels, classes=args.classes,
                 classes_file=args.classes_file, preprocess=args.preprocess, image_size=args.image_size,
                 layers=args.layers, batch_size=args.batch_size, workers=workers, device=args.device,
                 precision=args.precision, progress=args.progress, overwrite=args.overwrite or None)
    cfg = cli.resolve_config(ExtractConfig, "extract", args, flags)
    if not cfg.data:
        raise ConfigError("data: no dataset given; pass --data PATH (make analyze DATA=PATH)")
    return cfg


if __name__ == "__main__":
    runtime.setup_logging()
    runtime.keep_freed_memory()
    sys.exit(cli.run_main(parse, main, "extract"))
