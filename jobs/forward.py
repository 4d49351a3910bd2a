"""The extract's forward on one batch: the loader's images moved to the device, then the model (or the Attributor)
with the reducing hooks -> the unit's values, laid out by the run's ValueLayout, and the prediction rows. The
Grad-CAMs come from the backward that gives the contributions: they cost no backward of their own."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from analysis.data.dataset import Batch
from analysis.data.preprocessing import Preprocessing
from analysis.model.activations import ChannelReducer
from analysis.model.attribution import Attributor
from analysis.model.heads import compute_class_logits, compute_probabilities
from analysis.model.precision import autocast
from analysis.store import contract
from analysis.store.layout import CONTRIBUTION, GRADCAM, ValueBlock
from analysis.store.predictions import make_prediction_rows

if TYPE_CHECKING:
    from jobs.extract import ExtractRun


def to_device(images: torch.Tensor, preprocessing: Preprocessing, device: torch.device) -> torch.Tensor:
    """The loader's uint8 (B, 3, N, N) -> the network's normalized float32 input on `device`, channels_last.
    The copy (and on a GPU the workers' shared memory and the pinning before it) carries a quarter of float32's
    bytes, and the normalization is one pass per batch where the model runs."""
    x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return preprocessing.normalize(x)


def copy_to_host(x: torch.Tensor) -> np.ndarray:
    """(B, W) on any device -> numpy: one copy. From a GPU it goes into pinned memory without blocking, and one
    wait for the stream follows (the copy is queued behind the batch's kernels: nothing else is waited for)."""
    if x.device.type != "cuda":
        return x.numpy() if x.device.type == "cpu" else x.cpu().numpy()
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    host.copy_(x, non_blocking=True)
    torch.cuda.current_stream(x.device).synchronize()
    return host.numpy()


class BatchForward:
    """One batch through the model -> ((B_ok, width) values laid out by job.values, prediction rows of every file).

    The model runs in the job's precision; the reducer's hooks reduce every recorded layer on the way. With an
    attributor (the run attributes), it runs the forward and the backward of each class instead of the model."""

    def __init__(self, job: ExtractRun, reducer: ChannelReducer, attributor: Attributor | None = None):
        self.job = job
        self.reducer = reducer
        self.attributor = attributor
        self._class_index = {cls: j for j, cls in enumerate(job.loaded.classes)}  # the logits' columns

    def __call__(self, batch: Batch) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """batch.images: the network's input on the job's device (`to_device`)."""
        job, att = self.job, self.attributor
        k, width = len(job.loaded.classes), job.values.width
        imagenet_head = job.loaded.head == "imagenet"
        host = np.zeros((0, width + 2 * k), np.float32)
        top1 = np.zeros(0, np.int64) if imagenet_head else None
        if len(batch.images):
            x = batch.images
            with autocast(job.execution.device, job.execution.precision):
                raw = att.forward(x) if att is not None else job.model(x)  # (B_ok, 1000 or K)
            reduced = self.reducer.take()  # layer -> Reduction: (B_ok, C) mean, max and (when recorded) peak
            with torch.enable_grad() if att is not None else contextlib.nullcontext():
                logits = compute_class_logits(raw.float(), job.loaded)  # (B_ok, K), in the graph when attributing
            attributed = self._backward(logits)  # (layer -> (B_ok, K, C), layer -> (B_ok, K, h, w))
            logits = logits.detach()
            # One device-to-host copy per batch: [the values, logits, probs, ImageNet top-1 (exact in float32)]
            blocks = [self._block(b, reduced, *attributed) for b in job.values.blocks]
            blocks += [logits, compute_probabilities(logits)]
            if imagenet_head:
                blocks.append(raw.detach().argmax(dim=1, keepdim=True).float())
            host = copy_to_host(torch.cat(blocks, dim=1))
            if imagenet_head:
                top1 = host[:, -1].astype(np.int64)
        values, class_logits, probs = host[:, :width], host[:, width : width + k], host[:, width + k : width + 2 * k]
        return values, make_prediction_rows(job.found.records, batch, job.loaded, class_logits, probs, top1)

    def _backward(self, logits: torch.Tensor) -> tuple[dict, dict]:
        """The contributions of every attributed layer and, when the run records them, the Grad-CAMs of its layer,
        from one backward per class; nothing without attribution."""
        att, gradcam = self.attributor, self.job.values.gradcam
        if att is None:
            return {}, {}
        if gradcam is None:
            return att.take_contributions(logits), {}
        return att.take_both(logits, [gradcam.layer])

    def _block(self, block: ValueBlock, reduced: dict, contrib: dict, cams: dict) -> torch.Tensor:
        """(B_ok, width) columns of one block of values: peaks as float32 (exact integers below 2**24), a Grad-CAM
        flattened row-major."""
        if block.kind == CONTRIBUTION:
            return contrib[block.layer][:, self._class_index[block.cls]]
        if block.kind == GRADCAM:
            return cams[block.layer][:, self._class_index[block.cls]].flatten(1)
        r = reduced[block.layer]
        return {contract.STAT_MEAN: r.mean, contract.STAT_MAX: r.max, contract.STAT_PEAK: r.peak}[block.kind].float()
