"""Steps 4-5 of the extract: this shard's units streamed through the model, each committed as it completes, then
the run marked complete (run.json) by the shard that finds every unit of every shard done."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from analysis.data.dataset import ImageDataset, collate_images
from analysis.data.device_decode import DeviceDecoder
from analysis.data.jpeg_bytes import JpegBytesDataset
from analysis.model.activations import ChannelReducer
from analysis.model.attribution import Attributor
from analysis.model.compiled import choose_reductions
from analysis.model.heads import compute_class_logits
from analysis.model.precision import autocast
from analysis.store import manifest
from analysis.store.shards import iter_unit_sizes, make_unit_batches
from analysis.store.writer import UnitSchemas, UnitWriter
from jobs import cluster, finalize, run_metadata
from jobs.forward import BatchForward, to_device

if TYPE_CHECKING:
    from jobs.extract import ExtractRun

log = logging.getLogger("cnn_blackbox")
WRITER_ENV = "CNN_BLACKBOX_WRITER"  # "inline": commit units in the main thread (a benchmark's comparison)


def stream_units(job: ExtractRun) -> int | None:
    """Run and commit this shard's units to do; the exit code when a signal stopped it early, else None.

    Each unit is committed on the writer's thread while the next batches run (CNN_BLACKBOX_WRITER=inline: in this
    thread, as benchmarks/bench_extract.py compares). A stop request (SIGINT, SIGTERM) lets the unit being written
    finish and begins no other: the batches of a unit not yet written are dropped, and a rerun redoes them."""
    cfg, execution = job.cfg, job.execution
    dataset, decoder = make_dataset(job)
    batches = make_unit_batches(job.todo, execution.batch_size)
    loader = make_loader(dataset, batches, execution.workers, execution.device, execution.prefetch)
    schemas = UnitSchemas.make(job.loaded.classes, job.loaded.head == "imagenet", job.values, job.meta)
    attribution = job.values.attribution
    # Attribution needs a graph above its lowest layer: then no_grad (its tensors may enter one), else
    # inference_mode. No parameter ever needs a gradient.
    job.model.requires_grad_(False)
    grad_mode = torch.no_grad() if attribution else torch.inference_mode()
    reducer, how = make_reducer(job)
    writer = UnitWriter(
        job.out,
        job.values,
        schemas,
        cfg.unit_size,
        units=iter_unit_sizes(job.todo),
        stamp={**run_metadata.make_unit_stamp(job.run, job.shard, execution), **how},
    )
    with tqdm(
        total=sum(len(u) for u in job.todo), unit="img", disable=not cfg.progress, dynamic_ncols=True, file=sys.stderr
    ) as bar:
        reductions = reducer.reductions  # the attribution's sums too
        attributor = Attributor(job.model, attribution.layers, reductions) if attribution else contextlib.nullcontext()
        with cluster.StopSignals() as stop, writer, grad_mode, reducer, attributor as att:
            if os.environ.get(WRITER_ENV, "thread") != "inline":
                writer.commit_in_background(should_stop=lambda: stop.requested)
            forward = BatchForward(job, reducer, att)
            for batch in loader:
                if decoder is not None:  # --decode gpu: the batch's JPEGs decoded on the device, put in their places
                    batch = decoder(batch)
                batch = dataclasses.replace(batch, images=to_device(batch.images, job.preprocessing, execution.device))
                values, rows = forward(batch)
                writer.add(rows, batch.ok, values)
                bar.update(len(batch.indices))
                if stop.requested:
                    break
            if stop.requested:
                writer.abandon()
            else:
                writer.close()
    if decoder is not None and decoder.fallbacks:
        log.info("decode gpu: %d JPEGs failed on %s and were decoded by PIL", decoder.fallbacks, execution.device)
    if stop.requested and writer.unit < len(job.todo):
        log.warning("stopped: %d units committed by this process; rerun the same command to resume", writer.unit)
        return stop.exit_code()
    return None


def make_reducer(job: ExtractRun) -> tuple[ChannelReducer, dict]:
    """The job's reducing hooks, with the reductions its config picks for this process's images (compiled here,
    before the first unit's clock starts, when they are the compiled ones); the unit stamp's fields that say
    which and how long compiling took."""
    execution, images = job.execution, sum(len(u) for u in job.todo)
    reductions, why = choose_reductions(job.cfg.reductions, execution.device, execution.precision, images)
    reducer = ChannelReducer(job.model, list(job.values.channels), job.values.peak_grid is not None, reductions)
    seconds = compile_reductions(job, reducer)
    log.info("reductions: %s%s", why, f"; compiled in {seconds:.1f} s" if seconds else "")
    return reducer, {"reductions": reductions.name, "compile_seconds": round(seconds, 3)}


def compile_reductions(job: ExtractRun, reducer: ChannelReducer) -> float:
    """Seconds spent compiling the reductions for every map the job's forward makes and every contribution its
    backward sums (two blank images through the model and the attribution, in the job's precision and grad mode),
    before the first unit's clock starts; 0 when they are not compiled."""
    if reducer.reductions.name != "compiled":
        return 0.0
    execution, size, attribution = job.execution, job.preprocessing.crop, job.values.attribution
    start = time.perf_counter()
    x = torch.zeros(2, 3, size, size, device=execution.device).contiguous(memory_format=torch.channels_last)
    att = Attributor(job.model, attribution.layers, reducer.reductions) if attribution else None
    with torch.no_grad() if att else torch.inference_mode(), reducer, att or contextlib.nullcontext():
        with autocast(execution.device, execution.precision):
            raw = att.forward(x) if att else job.model(x)
        reducer.take()
        if att:
            with torch.enable_grad():
                att.take_contributions(compute_class_logits(raw.float(), job.loaded))
    return time.perf_counter() - start


def make_dataset(job: ExtractRun) -> tuple[ImageDataset, DeviceDecoder | None]:
    """The job's dataset and, with decode gpu, the decoder that finishes its JPEGs on the device."""
    cfg, found, execution = job.cfg, job.found, job.execution
    gpu = execution.decode == "gpu"
    dataset = (JpegBytesDataset if gpu else ImageDataset)(
        found.records,
        job.preprocessing,
        cfg.max_image_pixels,
        cfg.max_file_bytes,
        found.root,
        threads=load_threads(execution.workers),
    )
    return dataset, DeviceDecoder(job.preprocessing, execution.device, cfg.max_image_pixels) if gpu else None


def load_threads(workers: int) -> int:
    """Threads that load a batch in this process: with no worker process, the forward's own threads (idle while
    the batch is decoded: PIL and hashlib release the GIL); with workers, the workers load and this process
    does not."""
    return max(1, torch.get_num_threads()) if workers == 0 else 1


def make_loader(
    dataset: ImageDataset, batches, workers: int, device: torch.device, prefetch: int = 4
) -> torch.utils.data.DataLoader:
    """Batches of `dataset` in the order of `batches` (lists of indices), decoded by `workers` processes (0: in
    this one), each keeping `prefetch` batches ready (jobs/shared_memory.py fits them in /dev/shm); pinned for a
    non_blocking copy when the model is on a GPU."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=prefetch if workers else None,
        worker_init_fn=cluster.ignore_stop_signals,
    )


def complete_run(job: ExtractRun) -> int:
    """Mark the run complete (run.json) when every unit of every shard is done; else say which are missing."""
    missing = manifest.find_missing_units(job.out, job.run)
    if missing:
        log.info(
            "shard %s done; the run is complete when the others are: %s",
            job.shard,
            manifest.describe_missing(missing, job.run["shards"]),
        )
        return 0
    summary, wrote = finalize.finalize_run(job.out)
    if wrote:
        run_metadata.log_summary(job.out, summary)
    else:
        log.info("the run in %s was already complete (finished %s)", job.out, summary.get("finished"))
    return 0
