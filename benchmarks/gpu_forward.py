"""The bare forward on any device: model(x) on a ready batch, as the job runs it (channels_last, autocast), with or
without torch.compile; and the DataLoader alone (decode + preprocess + collate + pin + copy), as the job builds it.
Both time themselves for about `seconds` after a warm-up, so a section's budget holds on any machine."""

from __future__ import annotations

import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(device: torch.device) -> torch.nn.Module:
    from analysis.model.vgg16 import make_vgg16  # noqa: PLC0415

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make_vgg16(1000).eval()
    return model.to(device, memory_format=torch.channels_last).requires_grad_(False)


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

    run = torch.compile(model, backend=compiled) if compiled else model
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(2 if compiled or device.type == "cuda" else 1):  # compile, cuDNN's choice, allocations
            run(x)
        _sync(device)
        n, t = 0, time.perf_counter()
        while n < min_iters or time.perf_counter() - t < seconds:
            run(x)
            n += 1
            if n % 4 == 0:
                _sync(device)
        _sync(device)
    return n * batch / (time.perf_counter() - t)


def measure_loader(
    cfg, device: torch.device, workers: int, seconds: float, limit: int | None = None
) -> tuple[float, float]:
    """(images/s in steady state, seconds to the first batch) of the job's DataLoader over the files of cfg.data
    (an ExtractConfig), each batch copied to `device` and normalized there as the job does it (uint8, pinned
    memory, non_blocking)."""
    from analysis.data.dataset import ImageDataset  # noqa: PLC0415
    from analysis.data.discovery import find_images  # noqa: PLC0415
    from analysis.data.preprocessing import make_preprocessing  # noqa: PLC0415
    from jobs.extract_units import load_threads, make_loader  # noqa: PLC0415
    from jobs.forward import to_device  # noqa: PLC0415

    found = find_images(cfg.data)
    records = found.records[:limit] if limit else found.records
    step = cfg.batch_size
    batches = [list(range(s, min(len(records), s + step))) for s in range(0, len(records), step)]
    pre = make_preprocessing(cfg.preprocess, cfg.image_size)
    dataset = ImageDataset(
        records, pre, cfg.max_image_pixels, cfg.max_file_bytes, found.root, threads=load_threads(workers)
    )
    t0 = time.perf_counter()
    first, n, t = None, 0, t0
    for b in make_loader(dataset, batches, workers, device):
        x = to_device(b.images, pre, device)
        if first is None:
            _sync(device)
            first = t = time.perf_counter()
            continue
        n += len(x)
        if time.perf_counter() - t > seconds:
            break
    _sync(device)
    return n / max(1e-9, time.perf_counter() - t), (first or time.perf_counter()) - t0
