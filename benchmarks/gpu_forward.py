"""The references the whole extract is compared with, on any device, each timed for about `seconds` after a warm-up
so that a section's budget holds on any machine:

- the bare forward: model(x) on a ready batch, as the job runs it (channels_last, autocast), eager or under
  torch.compile (dynamo's caches reset first, so every configuration compiles its own static graph), or with
  cuDNN's autotuner on a fresh thread (cuDNN's plan cache is per thread and its key leaves the flag out: on a thread
  that already ran that shape it reuses the heuristic's plan and measures nothing new);
- the attributed forward: the job's own Attributor, forward split at the lowest attributed layer, two class logits,
  one backward per class with gradient x activation and the Grad-CAM, without the reducing hooks or any output;
- the DataLoader alone (decode + preprocess + collate + pin + copy), as the job builds it, at the job's batch size,
  timed once the first round of batches (one per worker, all ready at about the same moment) is in; with --decode
  gpu's split, the device's decode and resize included.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import torch

IMAGENET_CAT_DOG = ((281, 286), (151, 269))  # configs/default.yaml's imagenet_classes: folded by logsumexp


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(device: torch.device) -> torch.nn.Module:
    from analysis.model.vgg16 import make_vgg16  # noqa: PLC0415

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make_vgg16(1000).eval()
    return model.to(device, memory_format=torch.channels_last).requires_grad_(False)


def _time(step: Callable[[], object], device: torch.device, batch: int, seconds: float, min_iters: int) -> float:
    """images/s of `step` (one batch) after two warm-up steps (compilation, cuDNN's choice, allocations)."""
    for _ in range(2 if device.type == "cuda" else 1):
        step()
    _sync(device)
    n, t = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t < seconds:
        step()
        n += 1
        if n % 4 == 0:
            _sync(device)
    _sync(device)
    return n * batch / (time.perf_counter() - t)


def _input(device: torch.device, batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)


def measure_forward(
    model,
    device: torch.device,
    precision: str,
    batch: int,
    size: int,
    seconds: float,
    min_iters: int = 3,
    compiled: str | None = None,
) -> float:
    """images/s of model(x) at `batch` x 3 x size x size; compiled: a torch.compile backend (inductor on a GPU,
    eager to run the same path cheaply on a CPU) or None. Compilation happens in the warm-up, not in the figure."""
    from analysis.model.precision import autocast  # noqa: PLC0415

    if compiled:
        from torch import _dynamo  # noqa: PLC0415

        _dynamo.reset()  # a fresh cache: no graph of an earlier batch size or precision is reused or widened
        run = torch.compile(model, backend=compiled, dynamic=False)
    else:
        run = model
    x = _input(device, batch, size)
    with torch.inference_mode(), autocast(device, precision):
        return _time(lambda: run(x), device, batch, seconds, min_iters)


def measure_autotuned(model, device: torch.device, precision: str, batch: int, size: int, seconds: float) -> float:
    """measure_forward with torch.backends.cudnn.benchmark on, on a thread of its own (a fresh plan cache)."""
    found: dict = {}

    def run():
        try:
            found["v"] = measure_forward(model, device, precision, batch, size, seconds)
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            found["e"] = e

    torch.backends.cudnn.benchmark = True
    try:
        thread = threading.Thread(target=run, name="cudnn-autotune", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)  # wakes for the section's time limit (a signal)
    finally:
        torch.backends.cudnn.benchmark = False
    if "e" in found:
        raise found["e"]
    return found["v"]


def measure_attributed(
    model, device: torch.device, precision: str, batch: int, size: int, seconds: float, min_iters: int = 3
) -> float:
    """images/s of the default attribution's own work (conv4_3 and conv5_3, the two classes of the default config,
    conv5_3's Grad-CAM), as jobs/forward.py calls it, without the hooks' reductions or any output."""
    from analysis.model.attribution import Attributor  # noqa: PLC0415
    from analysis.model.precision import autocast  # noqa: PLC0415

    x = _input(device, batch, size)
    with torch.no_grad(), Attributor(model, ("conv4_3", "conv5_3")) as att:

        def step():
            with autocast(device, precision):
                raw = att.forward(x)
            with torch.enable_grad():  # the logits in the graph, as compute_class_logits makes them
                raw = raw.float()
                logits = torch.stack([raw[:, lo:hi].logsumexp(dim=1) for lo, hi in IMAGENET_CAT_DOG], dim=1)
            return att.take_both(logits, ["conv5_3"])

        return _time(step, device, batch, seconds, min_iters)


def measure_loader(
    cfg, device: torch.device, workers: int, batch: int, seconds: float, decode: str = "cpu"
) -> tuple[float, float]:
    """(images/s in steady state, seconds until the first round of batches is in) of the job's DataLoader over the
    files of cfg.data (an ExtractConfig) at `batch` images, each batch copied to `device` and normalized there as
    the job does it (uint8, pinned memory, non_blocking, prefetch fitted to /dev/shm); decode gpu: the workers check
    the JPEGs and pass their bytes, which the device decodes and resizes (jobs/extract_units.py's make_dataset). The
    clock starts once every worker has delivered its first batch: those arrive together, and counting them would
    add W-1 free batches."""
    from analysis.data.dataset import ImageDataset  # noqa: PLC0415
    from analysis.data.device_decode import DeviceDecoder  # noqa: PLC0415
    from analysis.data.discovery import find_images  # noqa: PLC0415
    from analysis.data.jpeg_bytes import JpegBytesDataset  # noqa: PLC0415
    from analysis.data.preprocessing import make_preprocessing  # noqa: PLC0415
    from jobs.extract_units import load_threads, make_loader  # noqa: PLC0415
    from jobs.forward import to_device  # noqa: PLC0415
    from jobs.shared_memory import fit_prefetch  # noqa: PLC0415

    found = find_images(cfg.data)
    records = found.records
    batches = [list(range(s, min(len(records), s + batch))) for s in range(0, len(records), batch)]
    first_round = max(1, workers)
    if len(batches) <= first_round:
        raise ValueError(f"{len(records)} images make {len(batches)} batches of {batch}: none after the first round")
    pre = make_preprocessing(cfg.preprocess, cfg.image_size)
    dataset = (JpegBytesDataset if decode == "gpu" else ImageDataset)(
        records, pre, cfg.max_image_pixels, cfg.max_file_bytes, found.root, threads=load_threads(workers)
    )
    decoder = DeviceDecoder(pre, device, cfg.max_image_pixels) if decode == "gpu" else None
    prefetch = fit_prefetch(workers, batch, pre.crop)
    t0 = time.perf_counter()
    seen, n, t = 0, 0, t0
    for b in make_loader(dataset, batches, workers, device, prefetch):
        x = to_device((decoder(b) if decoder else b).images, pre, device)
        seen += 1
        if seen == first_round:
            _sync(device)
            t = time.perf_counter()
            ready = t - t0
            continue
        if seen > first_round:
            n += len(x)
            if time.perf_counter() - t > seconds:
                break
    _sync(device)
    return n / max(1e-9, time.perf_counter() - t), ready
