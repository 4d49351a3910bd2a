"""Extract: VGG16 over a whole dataset -> per-image predictions and per-channel activations in Parquet.

    python -m jobs.extract --data ./dogs-vs-cats [--out runs/x] [--weights imagenet|random|FILE] [--set key=value]
    torchrun --standalone --nproc_per_node=4 -m jobs.extract --data ...     (one shard per process)

Rerunning the same command on the same OUT resumes: finished units are skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from analysis.config import ConfigError
from analysis.data import names
from analysis.data.discovery import DataTree, Discovery, find_images, read_data_tree
from analysis.data.labels import apply_labels, describe_ids, describe_plural_twins, match_class_names, read_labels_csv
from analysis.data.preprocessing import Preprocessing, make_preprocessing
from analysis.model.activations import compute_map_sizes, compute_peak_grids
from analysis.model.attribution import METHOD
from analysis.model.choice import load_chosen_model
from analysis.model.vgg16 import CONV_INDICES, LoadedModel, layer_channels
from analysis.store import contract, manifest, tables
from analysis.store.layout import Attribution, Gradcam, ValueLayout
from analysis.store.shards import Shard, Unit, make_units, select_units
from jobs import cli, cluster, out_folder, run_metadata, runtime, shared_memory
from jobs.config import ExtractConfig
from jobs.extract_units import complete_run, stream_units

log = logging.getLogger("cnn_blackbox")


@dataclass(frozen=True)
class ExtractRun:
    """What the extract resolved before reading an image: where and which shard, the files, the model on its
    device, the values recorded, the run in OUT and this shard's units still to do."""

    cfg: ExtractConfig
    out: Path
    shard: Shard
    found: Discovery  # the files and their labels
    loaded: LoadedModel
    model: nn.Module  # loaded.model on the device, channels_last
    values: ValueLayout  # the layers' channels, their peaks' grids, the attribution and its Grad-CAM
    preprocessing: Preprocessing
    execution: runtime.Execution  # device, precision, workers, batch size, prefetch, decode
    meta: dict  # every table's key-value metadata (run_metadata.make_metadata)
    run: dict  # OUT/manifest.json, as read back
    todo: list[Unit]


def main(cfg: ExtractConfig) -> int:
    job = prepare(cfg)
    # 4. Stream this shard's units through the model, reducing every layer inside its hook; each unit is committed
    #    as it completes. SIGINT/SIGTERM stop once the unit being written is. 5. The shard that finds every unit done
    #    marks the run complete: run.json, written once. A failed write (a full disk) ends both in one line.
    try:
        stopped = stream_units(job) if job.todo else None
        return stopped if stopped is not None else complete_run(job)
    except tables.WriteError as e:
        done = len(manifest.read_unit_manifests(job.out, job.run["identity_sha256"]))
        raise tables.WriteError(
            f"OUT '{names.make_display(job.out)}': {e}; {done} of {job.run['n_units']} units "
            "are committed and kept: fix that and rerun the same command to resume"
        ) from None


def prepare(cfg: ExtractConfig) -> ExtractRun:
    """Steps 1-3 of the extract, in the order that fails early: everything resolved before an image is read."""
    out = out_folder.resolve_out(cfg.data, cfg.out)
    shard = cluster.pick_shard(cfg.shard)

    # 1. List DATA's files (names only: nothing is decoded yet); bad DATA or a bad labels file fails here, before
    #    the model.
    out_folder.check_out_writable(out, cfg.data)
    tree = read_data_tree(cfg.data)
    csv_labels = read_labels_csv(cfg.labels) if cfg.labels else None

    # 2. The model and its weights, before any image is read; then the images, laid out knowing the model's classes.
    device = runtime.pick_device(cfg.device, cfg.share_gpus)
    precision = runtime.pick_precision(cfg.precision, device)
    runtime.use_exact_fp32(device, precision)
    loaded = load_chosen_model(cfg, download=cfg.download)
    if loaded.random:
        log.warning("RANDOM WEIGHTS (seed %d): a smoke run; these activations and predictions mean nothing", cfg.seed)
    found, label_map = find_labeled_images(cfg, tree, csv_labels, loaded.classes)
    model = loaded.model.to(device, memory_format=torch.channels_last)
    preprocessing = make_preprocessing(cfg.preprocess, cfg.image_size)
    values = make_value_layout(cfg, model, loaded.classes, preprocessing.crop)

    # 3. How it runs (workers whose batches must fit in /dev/shm). The run in OUT: create it, resume it, or refuse a
    #    different one. This shard's units, less those done.
    workers, batch_size = runtime.pick_workers(cfg.workers, device), runtime.pick_batch_size(cfg.batch_size, device)
    prefetch = shared_memory.fit_prefetch(workers, batch_size, preprocessing.crop)
    decode, why = runtime.pick_decode(cfg.decode, device, preprocessing)
    log.info("%s", why)
    execution = runtime.Execution(device, precision, workers, batch_size, prefetch, decode)
    meta = run_metadata.make_metadata(cfg, found, loaded, values, preprocessing, execution, label_map)
    run = run_metadata.make_run_manifest(meta, found, cfg, shard)
    if out_folder.open_run(out, run, cfg.overwrite) or not (out / contract.CONFIG_YAML).exists():
        run_metadata.write_config(out, cfg)
    run = manifest.read_run_manifest(out)
    values, meta = match_begun_run(values, meta, run["meta"])
    mine = select_units(make_units(found.n_images, cfg.unit_size), shard)
    todo = manifest.plan_resume(out, mine, run["identity_sha256"], values)
    log.info(
        "shard %s (%s): %d of %d units of %d images; %d done before, %d to do",
        shard,
        shard.source,
        len(mine),
        run["n_units"],
        cfg.unit_size,
        len(mine) - len(todo),
        len(todo),
    )
    if not todo:  # said in a line: an empty progress bar ("0img") would look like a run that found no image
        log.info(
            "nothing to extract: %s",
            f"all {len(mine)} units of this shard were done already"
            if mine
            else f"this shard has none of the run's {run['n_units']} units (more shards than units)",
        )
    return ExtractRun(cfg, out, shard, found, loaded, model, values, preprocessing, execution, meta, run, todo)


def find_labeled_images(
    cfg: ExtractConfig, tree: DataTree, csv_labels: Mapping[str, str] | None, classes: Sequence[str]
) -> tuple[Discovery, dict[str, str]]:
    """DATA's images and their labels, and the folder names mapped onto the classes. A folder that names a class is
    a class folder whatever its files are called. Every shard lists them all, sorted, and checks (open_run) that it
    saw the same list as the run it joins. Folder names that are plurals of the classes (Keras's cats/, dogs/) are
    mapped onto them, and last the --labels CSV wins."""
    found = find_images(tree, classes)
    log.info(
        "DATA %s: %s; %d images, %d other files skipped %s",
        names.make_display(found.root),
        found.layout,
        found.n_images,
        sum(found.skipped.values()),
        dict(found.skipped) or "",
    )
    found, label_map = match_class_names(found, classes)
    if label_map:
        log.info(
            "labels matched to the model's classes: %s (--labels FILE.csv overrides)",
            ", ".join(f"{k} -> {v}" for k, v in label_map.items()),
        )
    for line in describe_plural_twins(found, classes):
        log.warning("%s", line)
    if csv_labels:
        found, unmatched = apply_labels(found, csv_labels)
        if unmatched:
            log.warning(
                "%d image ids in %s match no image found: %s (an id is the image's path under DATA with "
                "'/', as in the tables' image_id, e.g. %r)",
                len(unmatched),
                cfg.labels,
                describe_ids(unmatched),
                found.records[0].image_id,
            )
    unknown = Counter(r.label for r in found.records if r.label is not None and r.label not in classes)
    if unknown:
        log.warning(
            "labels not among the model's classes %s (their `correct` is null): %s",
            list(classes),
            dict(unknown.most_common(10)),
        )
    return found, label_map


def make_value_layout(cfg: ExtractConfig, model: nn.Module, classes: Sequence[str], size: int) -> ValueLayout:
    """What the run records: each layer's channels, its peaks' grids (by the architecture's arithmetic for a size x
    size input, known before any image), the attribution and the Grad-CAM of its deepest layer."""
    channels = layer_channels(model)
    attribution = make_attribution(cfg.attribution_layers, classes, channels)
    gradcam = None
    if attribution is not None:
        deepest = max(attribution.layers, key=CONV_INDICES.__getitem__)
        gradcam = Gradcam(deepest, compute_map_sizes(model, size)[deepest])
    return ValueLayout(
        {name: channels[name] for name in cfg.layers},
        attribution,
        compute_peak_grids(model, cfg.layers, size),
        gradcam,
    )


def match_begun_run(values: ValueLayout, meta: dict, begun: Mapping) -> tuple[ValueLayout, dict]:
    """A run begun before the peak and Grad-CAM tables existed (its manifest's meta has no "peak_grid"; its identity
    is the same: they add tables, they change no row) is resumed without them, so that all its units hold the same
    tables."""
    if "peak_grid" in begun:
        return values, meta
    return (
        dataclasses.replace(values, peak_grid=None, gradcam=None),
        {k: v for k, v in meta.items() if k not in ("peak_grid", "gradcam")},
    )


def make_attribution(layers: Sequence[str], classes: Sequence[str], channels: Mapping[str, int]) -> Attribution | None:
    """What the contribution tables hold (None when attribution is off); a class that cannot name a folder fails."""
    if not layers:
        return None
    for cls in classes:
        try:
            contract.attribution_dir("", cls, layers[0])
        except ValueError as e:
            raise ConfigError(f"attribution_layers: {e}; rename the class or pass --attribution-layers none") from None
    return Attribution(tuple(layers), tuple(classes), {n: channels[n] for n in layers}, METHOD)


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
    p.add_argument(
        "--attribution-layers",
        help="layers whose channels' contributions to each class logit are "
        "stored (gradient x activation): comma-separated names, or none",
    )
    p.add_argument("--batch-size", help="images per forward, or auto (128 on a GPU, 32 elsewhere)")
    p.add_argument("--workers", help="DataLoader worker processes, or auto")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--precision", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--reductions", help="auto | eager | compiled: how the hooks reduce each map")
    p.add_argument("--decode", help="auto | cpu | gpu: where JPEGs are decoded and resized")
    p.add_argument(
        "--shard",
        help="i/N (0-based): this process does units k with k %% N == i (default: from "
        "torchrun RANK/WORLD_SIZE or Slurm, else all)",
    )
    p.add_argument("--unit-size", type=int, help="images per unit: the part files committed, resumed and sharded")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in OUT (the same run resumes)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--print-out", action="store_true", help="print the resolved OUT folder and exit (for scripts)")
    cli.add_config_args(p)
    args = p.parse_args(argv)
    workers = args.workers if args.workers in (None, "auto") else cli.parse_int("--workers", args.workers)
    batch = args.batch_size if args.batch_size in (None, "auto") else cli.parse_int("--batch-size", args.batch_size)
    flags = dict(
        data=args.data,
        out=args.out,
        weights=args.weights,
        labels=args.labels,
        classes=args.classes,
        classes_file=args.classes_file,
        preprocess=args.preprocess,
        image_size=args.image_size,
        layers=args.layers,
        attribution_layers=args.attribution_layers,
        batch_size=batch,
        workers=workers,
        device=args.device,
        precision=args.precision,
        reductions=args.reductions,
        decode=args.decode,
        progress=args.progress,
        overwrite=args.overwrite or None,
        shard=args.shard,
        unit_size=args.unit_size,
    )
    cfg = cli.resolve_config(ExtractConfig, "extract", args, flags)
    if not cfg.data:
        raise ConfigError("data: no dataset given; pass --data PATH (make analyze DATA=PATH)")
    if args.print_out:
        # The real bytes, for a shell to pass on: a name that is not UTF-8 must reach `make report` unchanged.
        sys.stdout.buffer.write(os.fsencode(out_folder.resolve_out(cfg.data, cfg.out)) + b"\n")
        sys.exit(0)
    return cfg


if __name__ == "__main__":
    runtime.setup_logging()
    runtime.keep_freed_memory()
    sys.exit(cli.run_main(parse, main, "extract"))
