"""What the extract's DataLoader workers keep in /dev/shm, checked before the first image is read.

A worker process hands each batch to the main process through shared memory (torch.multiprocessing puts every
tensor in a file under /dev/shm), and the DataLoader keeps workers x prefetch_factor batches in flight. A
container's /dev/shm is often small (Docker's default is 64 MB): when it fills, a worker dies of "Bus error" and
the job ends with a DataLoader error that names neither. So the job asks first: it lowers prefetch_factor until its
batches fit (said in one line), and when not even one batch per worker fits it refuses to start, in one line that
says what to do. Workers: 0 (decoding in the main process) keeps nothing there.
"""

from __future__ import annotations

import logging
import os

from analysis.config import ConfigError

log = logging.getLogger("cnn_blackbox")

SHM = "/dev/shm"
PREFETCH = 4  # the DataLoader's prefetch_factor when it fits: enough to ride out a slow file
# A batch holds more than its pixels: its other fields, the page rounding of each file, and the batch the pinning
# thread has in hand while the workers fill their slots again.
MARGIN = 1.25


def read_shm_space(path: str = SHM) -> tuple[int, int] | None:
    """(bytes free, bytes in all) of /dev/shm; None where there is none (macOS, Windows)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def compute_batch_bytes(batch_size: int, crop: int) -> int:
    """What one batch holds there: (B, 3, N, N) uint8, with the margin."""
    return int(batch_size * 3 * crop * crop * MARGIN)


def describe_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def fit_prefetch(workers: int, batch_size: int, crop: int) -> int:
    """The DataLoader's prefetch_factor for `workers` worker processes at batches of `batch_size` crops of
    crop x crop: PREFETCH when workers x PREFETCH batches fit in /dev/shm's free space; fewer when not (one warning
    line); ConfigError (one line: fewer workers, a smaller batch or a bigger /dev/shm) when not even one each fits."""
    space = read_shm_space()
    if workers == 0 or space is None:
        return PREFETCH
    free, _ = space
    per_batch = compute_batch_bytes(batch_size, crop)
    fits = free // (workers * per_batch)
    what = f"{workers} DataLoader workers x batch {batch_size} x {describe_bytes(3 * crop * crop)} per {crop}-px image"
    bigger = f"docker run --shm-size={-(-workers * PREFETCH * per_batch // 2**30)}g"
    if fits >= PREFETCH:
        return PREFETCH
    if fits >= 1:
        log.warning(
            "/dev/shm has %s free: the DataLoader keeps %d batches per worker instead of %d (%s); a bigger /dev/shm "
            "(%s) lets it keep %d",
            describe_bytes(free),
            fits,
            PREFETCH,
            what,
            bigger,
            PREFETCH,
        )
        return int(fits)
    most = free // per_batch
    raise ConfigError(
        f"workers: /dev/shm has {describe_bytes(free)} free, but {what} need at least "
        f"{describe_bytes(workers * per_batch)} there (one batch each, +{MARGIN - 1:.0%}): pass --workers {most} "
        f"or fewer{' (0: decode in this process)' if most == 0 else ''}, a smaller --batch-size, or give the "
        f"machine a bigger /dev/shm ({bigger})"
    )
