"""Steps 4-5 of the extract: this shard's units streamed through the model, each committed as it completes, then
the run marked complete (run.json) by the shard that finds every unit of every shard done."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from analysis.data.dataset import ImageDataset, collate_images
from analysis.model.activations import ChannelReducer
from analysis.model.attribution import Attributor
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
    cfg, found, execution = job.cfg, job.found, job.execution
    dataset = ImageDataset(
        found.records,
        job.preprocessing,
        cfg.max_image_pixels,
        cfg.max_file_bytes,
        found.root,
        threads=load_threads(execution.workers),
    )
    batches = make_unit_batches(job.todo, execution.batch_size)
    loader = make_loader(dataset, batches, execution.workers, execution.device, execution.prefetch)
    schemas = UnitSchemas.make(job.loaded.classes, job.loaded.head == "imagenet", job.values, job.meta)
    writer = UnitWriter(
        job.out,
        job.values,
        schemas,
        cfg.unit_size,
        units=iter_unit_sizes(job.todo),
        stamp=run_metadata.make_unit_stamp(job.run, job.shard, execution),
    )
    attribution = job.values.attribution
    with tqdm(
        total=sum(len(u) for u in job.todo), unit="img", disable=not cfg.progress, dynamic_ncols=True, file=sys.stderr
    ) as bar:
        # Attribution needs a graph above its lowest layer: then no_grad (its tensors may enter one), else
        # inference_mode. No parameter ever needs a gradient.
        job.model.requires_grad_(False)
        grad_mode = torch.no_grad() if attribution else torch.inference_mode()
        attributor = Attributor(job.model, attribution.layers) if attribution else contextlib.nullcontext()
        reducer = ChannelReducer(job.model, list(job.values.channels), peaks=job.values.peak_grid is not None)
        with cluster.StopSignals() as stop, writer, grad_mode, reducer, attributor as att:
            if os.environ.get(WRITER_ENV, "thread") != "inline":
                writer.commit_in_background(should_stop=lambda: stop.requested)
            forward = BatchForward(job, reducer, att)
            for batch in loader:
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
    if stop.requested and writer.unit < len(job.todo):
        log.warning("stopped: %d units committed by this process; rerun the same command to resume", writer.unit)
        return stop.exit_code()
    return None


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
