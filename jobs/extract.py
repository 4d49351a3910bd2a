"""Extract: VGG16 over a whole dataset -> per-image predictions and per-channel activations in Parquet.

    python -m jobs.extract --data ./dogs-vs-cats [--out runs/x] [--weights imagenet|random|FILE] [--set key=value]
    torchrun --standalone --nproc_per_node=4 -m jobs.extract --data ...     (one shard per process)

Rerunning the same command on the same OUT resumes: finished units are skipped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from analysis.config import ConfigError
from analysis.data import names
from analysis.data.dataset import ImageDataset, collate_images
from analysis.data.discovery import find_images, read_data_tree
from analysis.data.labels import (apply_labels, describe_ids, describe_plural_twins, match_class_names,
                                  read_labels_csv)
from analysis.data.preprocessing import make_preprocessing
from analysis.model.activations import ChannelReducer
from analysis.model.attribution import METHOD, Attributor
from analysis.model.heads import compute_class_logits, compute_probabilities
from analysis.model.precision import autocast
from analysis.model.vgg16 import layer_channels, load_model
from analysis.store import contract, manifest, tables
from analysis.store.predictions import make_prediction_rows
from analysis.store.shards import iter_unit_sizes, make_unit_batches, make_units, select_units
from analysis.store.writer import UnitWriter
from jobs import cli, cluster, finalize, outputs, runtime
from jobs.config import ExtractConfig

log = logging.getLogger("cnn_blackbox")


def main(cfg: ExtractConfig) -> int:
    out = outputs.resolve_out(cfg.data, cfg.out)
    shard = cluster.pick_shard(cfg.shard)

    # 1. List DATA's files (names only: nothing is decoded yet); bad DATA or a bad labels file fails here, before
    #    the model.
    outputs.check_out_writable(out, cfg.data)
    tree = read_data_tree(cfg.data)
    csv_labels = read_labels_csv(cfg.labels) if cfg.labels else None

    # 2. The model and its weights, before any image is read; then the images, laid out knowing the model's classes
    #    (a folder that names one is a class folder whatever its files are called). Every shard lists them all,
    #    sorted, and checks below that it saw the same list as the run it joins. Then the labels: folder names that
    #    are plurals of the classes (Keras's cats/, dogs/) mapped onto them, and last the --labels CSV, which wins.
    device = cluster.pick_device(cfg.device)
    precision = runtime.pick_precision(cfg.precision, device)
    runtime.use_exact_fp32(device, precision)
    loaded = load_model(cfg.weights, classes=cfg.classes, classes_file=cfg.classes_file,
                        class_map=cfg.imagenet_classes, download=cfg.download, seed=cfg.seed)
    if loaded.random:
        log.warning("RANDOM WEIGHTS (seed %d): a smoke run; these activations and predictions mean nothing", cfg.seed)
    found = find_images(tree, loaded.classes)
    log.info("DATA %s: %s; %d images, %d other files skipped %s", names.make_display(found.root), found.layout,
             found.n_images, sum(found.skipped.values()), dict(found.skipped) or "")
    found, label_map = match_class_names(found, loaded.classes)
    if label_map:
        log.info("labels matched to the model's classes: %s (--labels FILE.csv overrides)",
                 ", ".join(f"{k} -> {v}" for k, v in label_map.items()))
    for line in describe_plural_twins(found, loaded.classes):
        log.warning("%s", line)
    if csv_labels:
        found, unmatched = apply_labels(found, csv_labels)
        if unmatched:
            log.warning("%d image ids in %s match no image found: %s (an id is the image's path under DATA with "
                        "'/', as in the tables' image_id, e.g. %r)", len(unmatched), cfg.labels,
                        describe_ids(unmatched), found.records[0].image_id)
    outputs.warn_unknown_labels(found.records, loaded.classes)
    model = loaded.model.to(device, memory_format=torch.channels_last)
    channels = {name: layer_channels(model)[name] for name in cfg.layers}
    attributed = make_attributed(cfg.attribution_layers, loaded.classes, layer_channels(model))
    preprocessing = make_preprocessing(cfg.preprocess, cfg.image_size)

    # 3. The run in OUT: create it, resume it, or refuse a different one. This shard's units, less those done.
    workers = cluster.pick_workers(cfg.workers, device)
    meta = outputs.make_metadata(cfg, found, loaded, channels, preprocessing, device, precision, workers,
                                 label_map, attributed)
    run = outputs.make_run_manifest(meta, found, cfg, shard)
    if outputs.open_run(out, run, cfg.overwrite) or not (out / contract.CONFIG_YAML).exists():
        outputs.write_config(out, cfg)
    run = manifest.read_run_manifest(out)
    mine = select_units(make_units(found.n_images, cfg.unit_size), shard)
    todo = manifest.plan_resume(out, mine, run["identity_sha256"], channels, meta["attribution"])
    log.info("shard %s (%s): %d of %d units of %d images; %d done before, %d to do", shard, shard.source,
             len(mine), run["n_units"], cfg.unit_size, len(mine) - len(todo), len(todo))
    if not todo:   # said in a line: an empty progress bar ("0img") would look like a run that found no image
        log.info("nothing to extract: %s", f"all {len(mine)} units of this shard were done already" if mine else
                 f"this shard has none of the run's {run['n_units']} units (more shards than units)")

    # 4. Stream this shard's units through the model, reducing every layer inside its hook; each unit is committed
    #    as it completes. SIGINT/SIGTERM stop at the next unit boundary. 5. The shard that finds every unit done
    #    marks the run complete: run.json, written once. A failed write (a full disk) ends both in one line.
    try:
        stopped = stream_units(cfg, out, found, loaded, model, channels, preprocessing, device, precision, workers,
                               meta, run, shard, todo) if todo else None
        return stopped if stopped is not None else complete_run(out, run, shard)
    except tables.WriteError as e:
        done = len(manifest.read_unit_manifests(out, run["identity_sha256"]))
        raise tables.WriteError(f"OUT '{names.make_display(out)}': {e}; {done} of {run['n_units']} units are "
                                 "committed and kept: fix that and rerun the same command to resume") from None


def stream_units(cfg, out, found, loaded, model, channels, preprocessing, device, precision, workers, meta, run,
                 shard, todo) -> int | None:
    """Run and commit this shard's units to do; the exit code when a signal stopped it early, else None."""
    dataset = ImageDataset(found.records, preprocessing, cfg.max_image_pixels, cfg.max_file_bytes, found.root,
                           threads=load_threads(workers))
    loader = make_loader(dataset, make_unit_batches(todo, cfg.batch_size), workers, device)
    attributed = {(cls, layer): c for cls, layer, c in iter_attributed(meta["attribution"])}
    writer = UnitWriter(out, loaded.classes, loaded.head == "imagenet", channels, cfg.unit_size, meta,
                        units=iter_unit_sizes(todo), stamp=outputs.make_unit_stamp(run, shard, device, cfg),
                        attribution=attributed)
    with tqdm(total=sum(len(u) for u in todo), unit="img", disable=not cfg.progress, dynamic_ncols=True,
              file=sys.stderr) as bar:
        # Attribution needs a graph above its lowest layer: then no_grad (its tensors may enter one), else
        # inference_mode. No parameter ever needs a gradient.
        model.requires_grad_(False)
        grad_mode = torch.no_grad() if attributed else torch.inference_mode()
        attributor = Attributor(model, cfg.attribution_layers) if attributed else contextlib.nullcontext()
        with cluster.StopSignals() as stop, grad_mode, ChannelReducer(model, cfg.layers) as reducer, \
                attributor as att:
            for batch in (loader if todo else ()):
                batch = dataclasses.replace(batch, images=to_device(batch.images, preprocessing, device))
                acts, rows = compute_batch(model, reducer, att, batch, loaded, found.records, channels, device,
                                           precision)
                writer.add(rows, batch.ok, acts)
                bar.update(len(batch.indices))
                if stop.requested and writer.at_unit_boundary:
                    break
    if stop.requested and writer.unit < len(todo):
        log.warning("stopped: %d units committed by this process; rerun the same command to resume", writer.unit)
        return stop.exit_code()
    writer.close()
    return None


def load_threads(workers: int) -> int:
    """Threads that load a batch in this process: with no worker process, the forward's own threads (idle while
    the batch is decoded: PIL and hashlib release the GIL); with workers, the workers load and this process
    does not."""
    return max(1, torch.get_num_threads()) if workers == 0 else 1


def make_loader(dataset: ImageDataset, batches, workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """Batches of `dataset` in the order of `batches` (lists of indices), decoded by `workers` processes (0: in
    this one); pinned for a non_blocking copy when the model is on a GPU."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_images,
        pin_memory=device.type == "cuda", persistent_workers=False, prefetch_factor=4 if workers else None,
        worker_init_fn=cluster.ignore_stop_signals)


def complete_run(out, run, shard) -> int:
    missing = manifest.find_missing_units(out, run)
    if missing:
        log.info("shard %s done; the run is complete when the others are: %s", shard,
                 manifest.describe_missing(missing, run["shards"]))
        return 0
    summary, wrote = finalize.finalize_run(out)
    if wrote:
        outputs.log_summary(out, summary)
    else:
        log.info("the run in %s was already complete (finished %s)", out, summary.get("finished"))
    return 0


def make_attributed(layers, classes, channels: dict[str, int]) -> dict | None:
    """What run.json and the identity say of the attribution tables, or None when it is off."""
    if not layers:
        return None
    for cls in classes:
        try:
            contract.attribution_dir("", cls, layers[0])
        except ValueError as e:
            raise ConfigError(f"attribution_layers: {e}; rename the class or pass --attribution-layers none") from None
    return {"layers": list(layers), "classes": list(classes), "channels": {n: channels[n] for n in layers},
            "method": METHOD}


def iter_attributed(attribution: dict | None):
    """(class, layer, channels) of every contribution table, in column order: by class, then by layer."""
    for cls in (attribution or {}).get("classes", ()):
        for layer in attribution["layers"]:
            yield cls, layer, attribution["channels"][layer]


def to_device(images: torch.Tensor, preprocessing, device: torch.device) -> torch.Tensor:
    """The loader's uint8 (B, 3, N, N) -> the network's normalized float32 input on `device`, channels_last.
    The copy (and on a GPU the workers' shared memory and the pinning before it) carries a quarter of float32's
    bytes, and the normalization is one pass per batch where the model runs."""
    x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return preprocessing.normalize(x)


def compute_batch(model, reducer, attributor, batch, loaded, records, channels, device, precision):
    """One batch through the model -> ((B_ok, width) activations, prediction rows of every file); width is
    2 * channels (means, maxima), then the contributions of each class to each attributed layer's channels.
    batch.images is the network's input on `device` (`to_device`)."""
    k = len(loaded.classes)
    imagenet_head = loaded.head == "imagenet"
    attributed = attributor.layers if attributor is not None else ()
    width = 2 * sum(channels.values()) + k * sum(attributor.channels.values() if attributor else ())
    host = np.zeros((0, width + 2 * k), np.float32)
    top1 = np.zeros(0, np.int64) if imagenet_head else None
    if len(batch.images):
        x = batch.images
        with autocast(device, precision):
            raw = attributor.forward(x) if attributor is not None else model(x)   # (B_ok, 1000 or K)
        reduced = reducer.take()                            # layer -> ((B_ok, C) mean, (B_ok, C) max)
        with torch.enable_grad() if attributor is not None else contextlib.nullcontext():
            logits = compute_class_logits(raw.float(), loaded)  # (B_ok, K), in the graph when attributing
        contrib = attributor.take_contributions(logits) if attributor is not None else {}  # layer -> (B_ok, K, C)
        logits = logits.detach()
        # One device-to-host copy per batch: [means of every layer, maxima of every layer, contributions of each
        # class to each attributed layer, logits, probs]
        host = torch.cat([reduced[n][0] for n in channels] + [reduced[n][1] for n in channels]
                         + [contrib[n][:, j] for j in range(k) for n in attributed]
                         + [logits, compute_probabilities(logits)], dim=1).cpu().numpy()
        if imagenet_head:
            top1 = raw.detach().argmax(dim=1).cpu().numpy()
    acts, class_logits, probs = host[:, :-2 * k], host[:, -2 * k:-k], host[:, -k:]
    rows = make_prediction_rows(records, batch.indices, batch.ok, batch.errors, batch.widths, batch.heights,
                                batch.formats, loaded.classes, class_logits, probs, top1, loaded.imagenet_categories,
                                batch.sha256s, batch.phashes)
    return acts, rows


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
    p.add_argument("--attribution-layers", help="layers whose channels' contributions to each class logit are "
                   "stored (gradient x activation): comma-separated names, or none")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", help="DataLoader worker processes, or auto")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--shard", help="i/N (0-based): this process does units k with k %% N == i (default: from "
                   "torchrun RANK/WORLD_SIZE or Slurm, else all)")
    p.add_argument("--unit-size", type=int, help="images per unit: the part files committed, resumed and sharded")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in OUT (the same run resumes)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--print-out", action="store_true", help="print the resolved OUT folder and exit (for scripts)")
    cli.add_config_args(p)
    args = p.parse_args(argv)
    workers = args.workers if args.workers in (None, "auto") else cli.parse_int("--workers", args.workers)
    flags = dict(data=args.data, out=args.out, weights=args.weights, labels=args.labels, classes=args.classes,
                 classes_file=args.classes_file, preprocess=args.preprocess, image_size=args.image_size,
                 layers=args.layers, attribution_layers=args.attribution_layers, batch_size=args.batch_size,
                 workers=workers, device=args.device,
                 precision=args.precision, progress=args.progress, overwrite=args.overwrite or None,
                 shard=args.shard, unit_size=args.unit_size)
    cfg = cli.resolve_config(ExtractConfig, "extract", args, flags)
    if not cfg.data:
        raise ConfigError("data: no dataset given; pass --data PATH (make analyze DATA=PATH)")
    if args.print_out:
        # The real bytes, for a shell to pass on: a name that is not UTF-8 must reach `make report` unchanged.
        sys.stdout.buffer.write(os.fsencode(outputs.resolve_out(cfg.data, cfg.out)) + b"\n")
        sys.exit(0)
    return cfg


if __name__ == "__main__":
    runtime.setup_logging()
    runtime.keep_freed_memory()
    sys.exit(cli.run_main(parse, main, "extract"))
