"""Process-level choices that only entry points make: device, precision, workers, decode, logging, allocator."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from analysis.config import ConfigError
from analysis.data.names import make_log_safe

if TYPE_CHECKING:
    from analysis.data.preprocessing import Preprocessing

log = logging.getLogger("cnn_blackbox")

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


class OneLineFormatter(logging.Formatter):
    """Every record is one line: a file name with a newline or a byte that is not UTF-8 cannot forge or break one."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return make_log_safe(super().formatMessage(record))


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


@dataclass(frozen=True)
class Execution:
    """How this process runs the model: run.json records it (of these, only the precision changes a value beyond
    rounding; decode moves the input by a grey level or so, and the pHash by up to 2 bits: README, --decode)."""

    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    workers: int  # DataLoader worker processes
    batch_size: int = 32
    prefetch: int = 4  # batches each worker keeps ready (jobs/shared_memory.py lowers it to fit /dev/shm)
    decode: str = "cpu"  # cpu | gpu: where JPEGs are decoded and resized (pick_decode)


def pick_device(name: str, share_gpus: bool = False) -> torch.device:
    """`auto` is cuda, then mps, then cpu; a named device that is not available fails with what is.

    Under torchrun (LOCAL_RANK) `auto` and `cuda` take GPU LOCAL_RANK: one process per GPU. More processes on the
    node than GPUs is refused in one line (never a quiet fall-back to the CPU) unless share_gpus: then process i
    takes GPU i mod G. CPU processes share the node's cores. A CUDA device always comes back with its index
    (cuda:N): torch.cuda.set_device refuses a bare `cuda`."""
    local_rank, local_world = os.environ.get("LOCAL_RANK"), os.environ.get("LOCAL_WORLD_SIZE")
    if local_rank is None or name not in ("auto", "cuda") or not torch.cuda.is_available():
        device = _check_device(name)
    else:
        gpus, rank = torch.cuda.device_count(), int(local_rank)
        if int(local_world or gpus) > gpus and not share_gpus:
            raise ConfigError(
                f"device: {local_world} processes on this node (torchrun --nproc_per_node) but {gpus} GPU"
                f"{'s' if gpus != 1 else ''}: start {gpus} (one per GPU), or --set share_gpus=true to let them "
                "share, or --device cpu"
            )
        device = torch.device(f"cuda:{rank % gpus}")
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    if device.type == "cpu" and count_local_processes() > 1:
        # torchrun sets OMP_NUM_THREADS=1; CPU processes on one node share its cores instead.
        torch.set_num_threads(max(1, count_cores() // count_local_processes()))
    return device


def _check_device(name: str) -> torch.device:
    """The device `name` names (`auto`: the best there is), or one line listing those available."""
    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        available.append("mps")
    if name == "auto":
        return torch.device("cuda" if "cuda" in available else "mps" if "mps" in available else "cpu")
    if name not in available:
        raise ConfigError(f"device: {name!r} is not available on this machine; available: {', '.join(available)}")
    return torch.device(name)


def pick_decode(name: str, device: torch.device, preprocessing: Preprocessing) -> tuple[str, str]:
    """(cpu | gpu, why: the log's line). `auto` is gpu on a CUDA device where torchvision decodes a probe JPEG,
    else cpu; a `gpu` that cannot run fails in one line (never a quiet fall-back). gpu on the CPU device runs the
    device path's own code (torchvision's libjpeg-turbo in the main process): how the tests check it."""
    from analysis.data.device_decode import INTERPOLATIONS, probe  # noqa: PLC0415 - torchvision.io only when asked

    if name == "cpu":
        return "cpu", "decode cpu: PIL decodes and resizes in the DataLoader"
    cannot = None
    if device.type not in ("cuda", "cpu"):
        cannot = f"the device is {device}: JPEGs are decoded on a CUDA device (or the CPU, for tests)"
    elif preprocessing.interpolation not in INTERPOLATIONS:
        cannot = f"the preprocessing resizes {preprocessing.interpolation}, not {' or '.join(INTERPOLATIONS)}"
    elif name == "auto" and device.type != "cuda":
        return "cpu", f"decode auto: cpu (the device is {device}; --decode gpu runs the device path's code here)"
    else:
        failure = probe(device)
        cannot = failure and f"torchvision cannot decode a JPEG on {device}: {failure}"
    if cannot and name == "gpu":
        raise ConfigError(f"decode: gpu, but {cannot}; use --decode cpu (or auto)")
    if cannot:
        return "cpu", f"decode auto: cpu ({cannot})"
    where = f"on {device}" if device.type == "cuda" else "in the main process on the CPU (slower than --decode cpu)"
    return "gpu", (
        f"decode {'gpu' if name == 'gpu' else 'auto: gpu'}: JPEGs decoded by torchvision.io.decode_jpeg {where}, "
        "resized and cropped there; other "
        "files, and a JPEG that fails there, by PIL on the CPU"
    )


def has_native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        # Ampere (8.0) and later compute in bf16; torch.cuda.is_bf16_supported() also says yes where it is only
        # emulated (a T4, a V100), and asks the current device rather than this one.
        return torch.cuda.get_device_properties(device).major >= 8
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(
            getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
            or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        )
    return False


def pick_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 where the hardware has native bf16 (recent CUDA GPUs, CPUs with avx512_bf16 or AMX)."""
    if name == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    if name == "fp16" and device.type == "cpu":
        log.warning("fp16 on the CPU is emulated and slow; bf16 or fp32 are the usual choices")
    return name


def count_cores() -> int:
    """The cores this process may run on (its affinity, e.g. under Slurm or taskset), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def count_local_processes() -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE), 1 without a launcher."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))


def pick_workers(workers: int | str, device: torch.device, processes: int | None = None) -> int:
    """DataLoader workers of one of `processes` processes sharing this machine's cores (None: torchrun's
    LOCAL_WORLD_SIZE, 1 without a launcher). On a CPU run the forward's threads already use every core, and a
    worker decoding beside them makes one of them a straggler in every convolution: on 2 cores, 0 workers measured
    faster than 1 (9.4 vs 9.0 img/s at 224 px). Many cores have room for a worker; a GPU run needs every core it can
    get decoding, leaving two to the process that drives the GPU (its pinning thread and unit writer)."""
    if workers != "auto":
        return int(workers)
    processes = count_local_processes() if processes is None else processes
    cores = max(1, count_cores() // max(1, processes))
    if device.type == "cpu":
        return 0 if cores <= 4 else min(4, cores // 8 or 1)
    return max(1, min(GPU_MAX_WORKERS, cores - 2))


# A GPU's defaults (not yet measured on a GPU: benchmarks/bench_gpu.py measures them): VGG16 at 224 px runs a few
# thousand images a second on an H100 in bf16, and a worker decodes ~150-250 Kaggle-sized JPEGs a second, so a GPU
# wants every core decoding but the main process's and one for the pinning thread and the unit writer.
GPU_BATCH_SIZE, CPU_BATCH_SIZE, GPU_MAX_WORKERS = 128, 32, 16


def pick_batch_size(batch_size: int | str, device: torch.device) -> int:
    """`auto`: 128 on a GPU (longer kernels, fewer launches and copies; VGG16's largest maps at 224 px, conv1's, are
    1.6 GB at 128 images in bf16), 32 elsewhere (the CPU default the benchmarks measured)."""
    if batch_size != "auto":
        return int(batch_size)
    return GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def use_exact_fp32(device: torch.device, precision: str) -> None:
    """fp32 means fp32 on a GPU too: PyTorch lets cuDNN run fp32 convolutions in TF32 (10-bit mantissa) on Ampere
    and later unless told otherwise, which would record TF32 activations as fp32. No-op off CUDA or in bf16/fp16."""
    if device.type != "cuda" or precision != "fp32":
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # the newer API; mixing it with the old one fails
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def keep_freed_memory() -> bool:
    """Stop glibc from returning VGG16's large activation buffers to the OS after every batch.

    By default glibc serves blocks above 32 MB with mmap and unmaps them on free, so every batch faults its
    activation buffers in again. Serving them from the heap and never trimming it keeps the pages (measured on
    the 2-core CPU, 224 px fp32 bare forward: 1.22x at batch 32, 1.07x at batch 4; benchmarks/bench_extract.py).
    Linux/glibc only; elsewhere this is a no-op. Returns whether it was set.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    except (OSError, AttributeError):
        return False
    return ok
